//! `val_loss.png`: validation loss against training tokens, one line per run.

use crate::Record;
use anyhow::{Result, anyhow};
use plotters::prelude::*;
use std::path::Path;

/// Fonts tried for labels; without one the curves are drawn unlabelled.
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

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}

/// Draws every run's validation curve.
pub fn val_loss_png(path: &Path, records: &[Record]) -> Result<()> {
    let labelled = register_font();
    let points = || records.iter().flat_map(|r| r.curve.iter());
    let max_t = points().map(|p| p.tokens).max().unwrap_or(1) as f64;
    let (lo, hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.val_loss), b.max(p.val_loss))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return Ok(());
    }
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(14);
    if labelled {
        builder
            .caption(
                "tiny BitNet, k = 4: validation loss vs tokens",
                ("sans-serif", 22),
            )
            .x_label_area_size(44)
            .y_label_area_size(64);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..max_t * 1.02, (lo - 0.05)..(hi + 0.05))
        .map_err(err)?;
    if labelled {
        chart
            .configure_mesh()
            .x_desc("training tokens (all workers)")
            .y_desc("validation loss (nats/token)")
            .draw()
            .map_err(err)?;
    } else {
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_y_mesh()
            .draw()
            .map_err(err)?;
    }
    for (i, r) in records.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let series = chart
            .draw_series(LineSeries::new(
                r.curve.iter().map(|p| (p.tokens as f64, p.val_loss)),
                color.stroke_width(2),
            ))
            .map_err(err)?;
        if labelled {
            series.label(r.name.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
    }
    if labelled {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
