//! Line charts as PNG (plotters' bitmap backend), for loss curves: one shared helper so
//! every experiment draws its curves the same way. Feature `plot`.
//!
//! ```
//! use bitnet_model::plot::{Chart, Series, line_chart_png};
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("loss.png");
//! let val = Series::new("val", vec![(0.0, 8.3), (100.0, 6.1), (200.0, 5.4)], 0).markers();
//! line_chart_png(&path, &Chart::new("loss", "step", "nats/token"), &[val])?;
//! assert!(std::fs::metadata(&path)?.len() > 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// Fonts tried for labels; without one the curves are drawn unlabelled (plotters' ab_glyph
/// text needs a registered font file).
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn register_font() -> bool {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REGISTERED.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            std::fs::read(p).ok().is_some_and(|bytes| {
                // Leaked once per process: plotters keeps fonts for the program's lifetime.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

/// Title, axis descriptions and size of a chart.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    /// Caption above the plot.
    pub title: &'a str,
    /// X axis description.
    pub x_desc: &'a str,
    /// Y axis description.
    pub y_desc: &'a str,
    /// Image size in pixels.
    pub size: (u32, u32),
}

impl<'a> Chart<'a> {
    /// A 960 x 600 chart.
    pub fn new(title: &'a str, x_desc: &'a str, y_desc: &'a str) -> Self {
        Self {
            title,
            x_desc,
            y_desc,
            size: (960, 600),
        }
    }
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// `(x, y)` points in drawing order; non-finite ones are skipped.
    pub points: Vec<(f64, f64)>,
    /// Palette index (series with the same index share a colour).
    pub color: usize,
    /// Stroke width in pixels.
    pub width: u32,
    /// Drawn at 35 % opacity (e.g. a noisy training curve under its validation curve).
    pub faint: bool,
    /// A dot on every point.
    pub markers: bool,
}

impl Series {
    /// A 2-pixel opaque line without markers.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>, color: usize) -> Self {
        Self {
            label: label.into(),
            points,
            color,
            width: 2,
            faint: false,
            markers: false,
        }
    }

    /// Drawn at 35 % opacity.
    #[must_use]
    pub fn faint(mut self) -> Self {
        self.faint = true;
        self
    }

    /// A dot on every point, and a 3-pixel line.
    #[must_use]
    pub fn markers(mut self) -> Self {
        self.markers = true;
        self.width = 3;
        self
    }
}

/// Draws `series` into a PNG at `path`: x from `min(0, min x)`, y padded around the finite
/// points, legend when a font is available. Drawing and file errors are [`Error::Io`] on
/// `path`.
pub fn line_chart_png(path: &Path, chart: &Chart<'_>, series: &[Series]) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| {
        Error::io(
            path,
            std::io::Error::other(format!("drawing the chart: {e}")),
        )
    };
    let labelled = register_font();
    let finite = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.0.is_finite() && p.1.is_finite())
    };
    let (x_lo, x_hi, y_lo, y_hi) = finite().fold(
        (0.0f64, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY),
        |(a, b, c, d), p| (a.min(p.0), b.max(p.0), c.min(p.1), d.max(p.1)),
    );
    let (x_hi, y_lo, y_hi) = if y_lo.is_finite() {
        let pad = ((y_hi - y_lo) * 0.04).max(0.05);
        ((x_hi * 1.02).max(x_lo + 1.0), y_lo - pad, y_hi + pad)
    } else {
        (1.0, 0.0, 1.0)
    };
    let root = BitMapBackend::new(path, chart.size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(16);
    if labelled {
        builder
            .caption(chart.title, ("sans-serif", 22))
            .x_label_area_size(44)
            .y_label_area_size(64);
    }
    let mut ctx = builder
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
        .map_err(|e| fail(&e))?;
    let mut mesh = ctx.configure_mesh();
    if labelled {
        mesh.x_desc(chart.x_desc).y_desc(chart.y_desc);
    } else {
        mesh.disable_x_mesh().disable_y_mesh();
    }
    mesh.draw().map_err(|e| fail(&e))?;
    for s in series {
        let base = Palette99::pick(s.color).to_rgba();
        let color = if s.faint { base.mix(0.35) } else { base };
        let style = color.stroke_width(s.width);
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        let drawn = ctx
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(|e| fail(&e))?;
        if labelled {
            drawn
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
        if s.markers {
            ctx.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(|e| fail(&e))?;
        }
    }
    if labelled && !series.is_empty() {
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Width and height from a PNG's IHDR chunk.
    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&bytes[12..16], b"IHDR");
        let word = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
        (word(16), word(20))
    }

    #[test]
    fn draws_curves_into_a_png_of_the_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let train = Series::new("train", vec![(1.0, 7.0), (2.0, 6.5), (3.0, 6.0)], 0).faint();
        let val = Series::new("val", vec![(1.0, 7.2), (3.0, 6.3)], 0).markers();
        let mut chart = Chart::new("t", "step", "loss");
        chart.size = (320, 200);
        line_chart_png(&path, &chart, &[train, val]).unwrap();
        assert_eq!(png_size(&path), (320, 200));
    }

    #[test]
    fn empty_and_non_finite_series_still_draw() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.png");
        let chart = Chart::new("t", "x", "y");
        line_chart_png(&path, &chart, &[]).unwrap();
        assert_eq!(png_size(&path), (960, 600));
        let odd = Series::new("odd", vec![(0.0, f64::NAN), (f64::INFINITY, 1.0)], 3);
        line_chart_png(&path, &chart, &[odd]).unwrap();
        assert_eq!(png_size(&path), (960, 600));
    }

    #[test]
    fn an_unwritable_path_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("c.png");
        let s = Series::new("s", vec![(0.0, 1.0), (1.0, 2.0)], 1);
        let err = line_chart_png(&path, &Chart::new("t", "x", "y"), &[s]).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
