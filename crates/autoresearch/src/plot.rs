//! Study plots as SVG (plotters): optimization history, parallel coordinates and parameter
//! importance.
//!
//! SVG text is laid out by the viewer, so no font file is read or rasterised: the backend
//! wrapper below answers plotters' text-size questions with an estimate instead of asking
//! a font library (plotters' `ab_glyph` would need a registered TTF, which a bare machine
//! lacks).

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

use crate::error::{Error, Result};
use crate::importance::ped_anova;
use crate::space::{Distribution, SearchSpace};
use crate::trial::{Direction, Trial, TrialState};

const SIZE: (u32, u32) = (900, 540);
const FONT: &str = "sans-serif";

/// `SVGBackend` with font-free text measurement.
struct Svg<'a>(SVGBackend<'a>);

type SvgError = <SVGBackend<'static> as DrawingBackend>::ErrorType;
type DrawResult<T> = std::result::Result<T, DrawingErrorKind<SvgError>>;
type AreaResult = std::result::Result<(), DrawingAreaErrorKind<SvgError>>;

impl DrawingBackend for Svg<'_> {
    type ErrorType = SvgError;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }
    fn ensure_prepared(&mut self) -> DrawResult<()> {
        self.0.ensure_prepared()
    }
    fn present(&mut self) -> DrawResult<()> {
        self.0.present()
    }
    fn draw_pixel(&mut self, p: BackendCoord, c: BackendColor) -> DrawResult<()> {
        self.0.draw_pixel(p, c)
    }
    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
    ) -> DrawResult<()> {
        self.0.draw_line(a, b, s)
    }
    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
        fill: bool,
    ) -> DrawResult<()> {
        self.0.draw_rect(a, b, s, fill)
    }
    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        s: &S,
    ) -> DrawResult<()> {
        self.0.draw_path(path, s)
    }
    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        c: BackendCoord,
        r: u32,
        s: &S,
        fill: bool,
    ) -> DrawResult<()> {
        self.0.draw_circle(c, r, s, fill)
    }
    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        s: &S,
    ) -> DrawResult<()> {
        self.0.fill_polygon(vert, s)
    }
    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> DrawResult<()> {
        self.0.draw_text(text, style, pos)
    }
    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> DrawResult<(u32, u32)> {
        // Average sans-serif advance is about 0.55 em.
        let size = style.size();
        Ok((
            (text.chars().count() as f64 * size * 0.55).ceil() as u32,
            size.ceil() as u32,
        ))
    }
}

fn plot_err(path: &Path, e: DrawingAreaErrorKind<SvgError>) -> Error {
    Error::Plot {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// Renders into an SVG string; `name` only labels errors.
fn render(
    name: &Path,
    draw: impl FnOnce(&DrawingArea<Svg<'_>, Shift>) -> AreaResult,
) -> Result<String> {
    let mut buf = String::new();
    {
        let root = Svg(SVGBackend::with_string(&mut buf, SIZE)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(name, e))?;
        draw(&root).map_err(|e| plot_err(name, e))?;
        root.present().map_err(|e| plot_err(name, e))?;
    }
    Ok(buf)
}

fn complete(trials: &[Trial]) -> Vec<(&Trial, f64)> {
    trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(|t| t.value().filter(|v| v.is_finite()).map(|v| (t, v)))
        .collect()
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 1.0 };
    (lo - pad, hi + pad)
}

/// Blue (best) to red (worst).
fn heat(u: f64) -> RGBColor {
    let u = u.clamp(0.0, 1.0);
    RGBColor(
        (40.0 + 200.0 * u) as u8,
        (90.0 + 40.0 * (1.0 - (2.0 * u - 1.0).abs())) as u8,
        (220.0 - 190.0 * u) as u8,
    )
}

/// Optimization history: every complete trial's value (dots) and the best so far (line).
pub fn history_svg(trials: &[Trial], dir: Direction) -> Result<String> {
    let pts = complete(trials);
    let name = Path::new("optimization_history.svg");
    render(name, |root| {
        let n_max = trials.iter().map(|t| t.number).max().unwrap_or(0) as f64;
        let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if pts.is_empty() {
            (0.0, 1.0)
        } else {
            padded(lo, hi)
        };
        let mut chart = ChartBuilder::on(root)
            .caption("Optimization history", (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5..n_max + 0.5, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("trial")
            .y_desc("objective value")
            .draw()?;
        chart.draw_series(
            pts.iter()
                .map(|(t, v)| Circle::new((t.number as f64, *v), 3, BLUE.mix(0.7).filled())),
        )?;
        let mut best: Option<f64> = None;
        let line: Vec<(f64, f64)> = pts
            .iter()
            .map(|(t, v)| {
                let b = match best {
                    Some(b) if !dir.better(*v, b) => b,
                    _ => *v,
                };
                best = Some(b);
                (t.number as f64, b)
            })
            .collect();
        chart.draw_series(LineSeries::new(line, RED.stroke_width(2)))?;
        // plotters' own legend measures text with a font library; this one needs none.
        let (x, y) = (SIZE.0 as i32 - 190, 50);
        let text =
            |s: &str, y: i32| Text::new(s.to_string(), (x + 30, y - 7), (FONT, 14).into_font());
        root.draw(&Rectangle::new(
            [(x - 8, y - 14), (x + 170, y + 34)],
            WHITE.mix(0.85).filled(),
        ))
        .and_then(|()| root.draw(&Rectangle::new([(x - 8, y - 14), (x + 170, y + 34)], BLACK)))
        .and_then(|()| root.draw(&Circle::new((x + 10, y), 3, BLUE.filled())))
        .and_then(|()| root.draw(&text("objective value", y)))
        .and_then(|()| {
            root.draw(&PathElement::new(
                vec![(x, y + 20), (x + 20, y + 20)],
                RED.stroke_width(2),
            ))
        })
        .and_then(|()| root.draw(&text("best value", y + 20)))
    })
}

/// A parameter's position on its axis in `[0, 1]` (categoricals by choice index).
fn axis_pos(space: &SearchSpace, name: &str, t: &Trial) -> Option<f64> {
    let p = space.get(name)?;
    let v = t.params.get(name)?;
    match &p.dist {
        Distribution::Categorical { choices } => {
            let i = choices.iter().position(|c| c == v)?;
            Some(if choices.len() > 1 {
                i as f64 / (choices.len() - 1) as f64
            } else {
                0.5
            })
        }
        _ => p.dist.to_unit(v),
    }
}

/// Parallel coordinates: one axis per parameter (unit-scaled; log parameters in log
/// space) and one for the objective; one line per complete trial, coloured from best (blue)
/// to worst (red).
pub fn parallel_coordinates_svg(
    trials: &[Trial],
    space: &SearchSpace,
    dir: Direction,
) -> Result<String> {
    let pts = complete(trials);
    let names: Vec<&str> = space.params.iter().map(|p| p.name.as_str()).collect();
    let n_axes = names.len() + 1;
    let name = Path::new("parallel_coordinates.svg");
    render(name, |root| {
        let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let span = if hi > lo { hi - lo } else { 1.0 };
        let mut chart = ChartBuilder::on(root)
            .caption("Parallel coordinates", (FONT, 22))
            .margin(20)
            .build_cartesian_2d(-0.3..(n_axes as f64 - 0.7), -0.12..1.08)?;
        // Worst first, so the best lines end up on top.
        let mut order: Vec<&(&Trial, f64)> = pts.iter().collect();
        order.sort_by(|a, b| dir.loss(b.1).total_cmp(&dir.loss(a.1)));
        for (t, v) in order {
            let y_obj = (v - lo) / span;
            let y_obj = if dir == Direction::Maximize {
                y_obj
            } else {
                1.0 - y_obj
            };
            let mut line: Vec<(f64, f64)> = names
                .iter()
                .enumerate()
                .filter_map(|(i, n)| axis_pos(space, n, t).map(|y| (i as f64, y)))
                .collect();
            line.push(((n_axes - 1) as f64, y_obj));
            let quality = 1.0 - y_obj;
            chart.draw_series(std::iter::once(PathElement::new(
                line,
                heat(quality).mix(0.6).stroke_width(1),
            )))?;
        }
        let label = |s: &str, x: f64, y: f64| {
            Text::new(
                s.to_string(),
                (x, y),
                (FONT, 14)
                    .into_font()
                    .color(&BLACK)
                    .pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    )),
            )
        };
        for i in 0..n_axes {
            let x = i as f64;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x, 0.0), (x, 1.0)],
                BLACK.stroke_width(1),
            )))?;
            let title = names.get(i).copied().unwrap_or("objective");
            chart.draw_series([label(title, x, -0.07)])?;
        }
        if !pts.is_empty() {
            let x = (n_axes - 1) as f64;
            let (top, bottom) = if dir == Direction::Maximize {
                (hi, lo)
            } else {
                (lo, hi)
            };
            chart.draw_series([
                label(&format!("{top:.4}"), x, 1.04),
                label(&format!("{bottom:.4}"), x, -0.035),
            ])?;
        }
        Ok(())
    })
}

/// Parameter importance (PED-ANOVA-style, see [`crate::importance`]) as horizontal bars.
pub fn importance_svg(trials: &[Trial], space: &SearchSpace, dir: Direction) -> Result<String> {
    let mut imp: Vec<(String, f64)> = ped_anova(trials, space, dir, 0.1).into_iter().collect();
    imp.sort_by(|a, b| a.1.total_cmp(&b.1));
    let name = Path::new("importance.svg");
    render(name, |root| {
        let n = imp.len().max(1);
        let mut chart = ChartBuilder::on(root)
            .caption("Parameter importance (PED-ANOVA)", (FONT, 22))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(10)
            .build_cartesian_2d(0.0..1.0, -0.6..(n as f64 - 0.4))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc("importance")
            .draw()?;
        chart.draw_series(imp.iter().enumerate().map(|(i, (_, v))| {
            let y = i as f64;
            Rectangle::new([(0.0, y - 0.35), (*v, y + 0.35)], BLUE.mix(0.6).filled())
        }))?;
        chart.draw_series(imp.iter().enumerate().map(|(i, (k, v))| {
            Text::new(
                format!("{k} ({v:.3})"),
                (0.01, i as f64 + 0.1),
                (FONT, 14).into_font().color(&BLACK),
            )
        }))?;
        if imp.is_empty() {
            chart.draw_series([Text::new(
                "not enough complete trials".to_string(),
                (0.3, 0.0),
                (FONT, 16).into_font().color(&BLACK),
            )])?;
        }
        Ok(())
    })
}

/// Writes `optimization_history.svg`, `parallel_coordinates.svg` and `importance.svg` into
/// `dir` (created if needed) and returns their paths.
pub fn write_plots(
    trials: &[Trial],
    space: &SearchSpace,
    direction: Direction,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let plots = [
        ("optimization_history.svg", history_svg(trials, direction)?),
        (
            "parallel_coordinates.svg",
            parallel_coordinates_svg(trials, space, direction)?,
        ),
        ("importance.svg", importance_svg(trials, space, direction)?),
    ];
    let mut out = Vec::new();
    for (file, svg) in plots {
        let path = dir.join(file);
        std::fs::write(&path, svg).map_err(|e| Error::io(&path, e))?;
        out.push(path);
    }
    Ok(out)
}
