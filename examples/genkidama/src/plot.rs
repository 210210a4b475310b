//! The PNG loss curve (plotters, bitmap backend).

use anyhow::{Context, Result};
use bitnet_model::train::Metric;
use plotters::prelude::*;
use std::path::Path;

/// Fonts tried for axis labels; without one the curve is drawn unlabelled.
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

/// One named curve set: training loss per step and validation loss per step.
pub struct Curves<'a> {
    /// Legend name.
    pub name: &'a str,
    /// Metrics of that run.
    pub metrics: &'a [Metric],
}

fn points(metrics: &[Metric], val: bool) -> Vec<(f64, f64)> {
    metrics
        .iter()
        .filter_map(|m| match (m, val) {
            (Metric::Train { step, loss, .. }, false) | (Metric::Val { step, loss, .. }, true) => {
                Some((*step as f64, *loss))
            }
            _ => None,
        })
        .collect()
}

/// Draws training (thin) and validation (thick, with markers) loss of each run.
pub fn loss_png(path: &Path, runs: &[Curves<'_>]) -> Result<()> {
    let labelled = register_font();
    let all: Vec<(f64, f64)> = runs
        .iter()
        .flat_map(|r| {
            points(r.metrics, false)
                .into_iter()
                .chain(points(r.metrics, true))
        })
        .collect();
    let max_x = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = all
        .iter()
        .filter(|p| p.1.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let (lo, hi) = if lo.is_finite() {
        (lo * 0.95, hi * 1.02)
    } else {
        (0.0, 1.0)
    };
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if labelled {
        builder
            .caption("Genkidama loss (nats/token)", ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(55);
    }
    let mut chart = builder.build_cartesian_2d(0.0..max_x, lo..hi)?;
    if labelled {
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .draw()?;
    }
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for (i, run) in runs.iter().enumerate() {
        let color = colors[i % colors.len()];
        let train =
            chart.draw_series(LineSeries::new(points(run.metrics, false), color.mix(0.35)))?;
        if labelled {
            train
                .label(format!("{} train", run.name))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.mix(0.35)));
        }
        let val_points = points(run.metrics, true);
        let val = chart.draw_series(LineSeries::new(val_points.clone(), color.stroke_width(3)))?;
        if labelled {
            val.label(format!("{} val", run.name))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
                });
        }
        chart.draw_series(
            val_points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    if labelled {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
