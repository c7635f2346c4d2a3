//! SVG plots for `report`, drawn with plotters: training curves, and a sweep's metric
//! against each parameter.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// One run's curves: training loss per step, and validation loss where measured.
pub struct Curves {
    /// The run's name, for the legend.
    pub name: String,
    /// (step, training loss).
    pub train: Vec<(f64, f64)>,
    /// (step, validation loss).
    pub valid: Vec<(f64, f64)>,
}

impl Curves {
    /// A run's curves from its `curve` artifact (`{"curve": [{"step", "loss"}…],
    /// "valid": […]}`).
    pub fn from_artifact(name: &str, curve: &serde_json::Value) -> Curves {
        let points = |field: &str| -> Vec<(f64, f64)> {
            curve[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p["step"].as_f64()?, p["loss"].as_f64()?)))
                .collect()
        };
        Curves {
            name: name.to_string(),
            train: points("curve"),
            valid: points("valid"),
        }
    }
}

/// One parameter of a sweep: each trial's (parameter, metric), and the best trial's.
pub struct SweepParam {
    /// The parameter's dotted path.
    pub param: String,
    /// (value, metric) per trial that has both as numbers.
    pub points: Vec<(f64, f64)>,
    /// The best trial's point (the `trials` artifact lists the best first).
    pub best: Option<(f64, f64)>,
}

/// Every numeric parameter of a tune job's `trials` artifact (best trial first).
pub fn sweep_params(trials: &serde_json::Value) -> Vec<SweepParam> {
    let trials = trials.as_array().map(Vec::as_slice).unwrap_or_default();
    let names: std::collections::BTreeSet<&String> = trials
        .iter()
        .filter_map(|t| t["params"].as_object())
        .flat_map(|m| m.keys())
        .collect();
    names
        .into_iter()
        .filter_map(|param| {
            let point =
                |t: &serde_json::Value| Some((t["params"][param].as_f64()?, t["value"].as_f64()?));
            let points: Vec<(f64, f64)> = trials.iter().filter_map(point).collect();
            (!points.is_empty()).then(|| SweepParam {
                param: param.clone(),
                best: trials.first().and_then(point),
                points,
            })
        })
        .collect()
}

fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

fn failed(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e}")
}

fn write(path: &Path, svg: String) -> anyhow::Result<()> {
    std::fs::write(path, svg).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// Draws every run's training loss (lines) and validation loss (dots) against steps,
/// into an SVG file.
pub fn loss_curves(path: &Path, runs: &[Curves]) -> anyhow::Result<()> {
    write(path, loss_curves_svg(runs)?)
}

/// [`loss_curves`] as SVG text.
pub fn loss_curves_svg(runs: &[Curves]) -> anyhow::Result<String> {
    let mut svg = String::new();
    draw_loss_curves(&mut svg, runs)?;
    Ok(svg)
}

fn draw_loss_curves(svg: &mut String, runs: &[Curves]) -> anyhow::Result<()> {
    let root = SVGBackend::with_string(svg, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let steps = span(runs.iter().flat_map(|r| r.train.iter().map(|p| p.0)));
    let losses = span(
        runs.iter()
            .flat_map(|r| r.train.iter().chain(&r.valid).map(|p| p.1)),
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Loss by step (lines: training; dots: validation)",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(steps.0.max(0.0)..steps.1, losses.0..losses.1)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("loss per completion token")
        .draw()
        .map_err(failed)?;
    for (i, run) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                run.train.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(failed)?
            .label(run.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(run.valid.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(failed)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(failed)?;
    root.present().map_err(failed)?;
    Ok(())
}

/// Draws a sweep's metric against one parameter, a dot per trial, the best in red,
/// into an SVG file. The axis is logarithmic when the parameter spans more than a
/// factor of 20.
pub fn metric_vs_param(
    path: &Path,
    metric: &str,
    param: &str,
    trials: &[(f64, f64)],
    best: Option<(f64, f64)>,
) -> anyhow::Result<()> {
    write(path, metric_vs_param_svg(metric, param, trials, best)?)
}

/// [`metric_vs_param`] as SVG text.
pub fn metric_vs_param_svg(
    metric: &str,
    param: &str,
    trials: &[(f64, f64)],
    best: Option<(f64, f64)>,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    draw_metric_vs_param(&mut svg, metric, param, trials, best)?;
    Ok(svg)
}

fn draw_metric_vs_param(
    svg: &mut String,
    metric: &str,
    param: &str,
    trials: &[(f64, f64)],
    best: Option<(f64, f64)>,
) -> anyhow::Result<()> {
    let root = SVGBackend::with_string(svg, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let (xs, ys) = (
        span(trials.iter().map(|t| t.0)),
        span(trials.iter().map(|t| t.1)),
    );
    let lowest = trials.iter().map(|t| t.0).fold(f64::INFINITY, f64::min);
    let highest = trials.iter().map(|t| t.0).fold(f64::NEG_INFINITY, f64::max);
    let caption = format!("{metric} by {param}");
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(&caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60);
    let dots = |best_dot: Option<(f64, f64)>| {
        trials
            .iter()
            .map(move |&t| {
                let is_best = best_dot == Some(t);
                Circle::new(
                    t,
                    if is_best { 7 } else { 5 },
                    if is_best { RED.filled() } else { BLUE.filled() },
                )
            })
            .collect::<Vec<_>>()
    };
    let dots = dots(best);
    if lowest > 0.0 && highest / lowest > 20.0 {
        let x = (lowest / 1.5..highest * 1.5).log_scale();
        draw_dots(&mut builder, x, ys.0..ys.1, param, metric, dots)?;
    } else {
        draw_dots(&mut builder, xs.0..xs.1, ys.0..ys.1, param, metric, dots)?;
    }
    root.present().map_err(failed)?;
    Ok(())
}

/// A mesh with its axis titles and `dots` on it, over an x axis of either kind
/// (linear or logarithmic).
fn draw_dots<X>(
    builder: &mut ChartBuilder<'_, '_, SVGBackend<'_>>,
    x: X,
    y: std::ops::Range<f64>,
    x_desc: &str,
    y_desc: &str,
    dots: Vec<Circle<(f64, f64), i32>>,
) -> anyhow::Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = builder.build_cartesian_2d(x, y).map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(failed)?;
    chart.draw_series(dots).map_err(failed)?;
    Ok(())
}
