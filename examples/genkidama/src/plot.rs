//! The PNG loss curve, drawn by bitnet-model's shared chart helper.

use anyhow::Result;
use bitnet_model::plot::{Chart, Series, line_chart_png};
use bitnet_model::train::Metric;
use std::path::Path;

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

/// Draws training (faint) and validation (thick, with markers) loss of each run, one
/// colour per run.
pub fn loss_png(path: &Path, runs: &[Curves<'_>]) -> Result<()> {
    let series: Vec<Series> = runs
        .iter()
        .enumerate()
        .flat_map(|(color, run)| {
            [
                Series::new(
                    format!("{} train", run.name),
                    points(run.metrics, false),
                    color,
                )
                .faint(),
                Series::new(
                    format!("{} val", run.name),
                    points(run.metrics, true),
                    color,
                )
                .markers(),
            ]
        })
        .collect();
    let chart = Chart::new("Genkidama loss (nats/token)", "step", "loss");
    line_chart_png(path, &chart, &series)?;
    Ok(())
}
