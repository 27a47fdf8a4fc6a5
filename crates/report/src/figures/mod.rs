//! The report's figures, drawn with plotters to PNG and SVG from trial and epoch rows alone.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::analysis::{collapsed, Analysis, Cell};
use crate::record::{EpochRecord, TrialRecord};
use crate::stats::mean_std;
use crate::Result;

mod draw;
mod heat;
mod temperature;

pub use draw::{compact, save_line_plot, Band, LinePlot, Outlier, RefLine, Series};
pub use heat::{save_heat_map, HeatMap};

// ---------------------------------------------------------------------------------------------
// From the analysis to figures.

/// One figure to draw: its file stem, its title and what it shows.
#[derive(Debug, Clone)]
pub enum Figure {
    Line { stem: String, plot: LinePlot },
    Heat { stem: String, map: HeatMap },
}

impl Figure {
    pub fn title(&self) -> &str {
        match self {
            Figure::Line { plot, .. } => &plot.title,
            Figure::Heat { map, .. } => &map.title,
        }
    }

    /// Draw it as PNG and SVG into `dir`; `None` when it has nothing to show.
    fn draw(&self, dir: &Path) -> Result<Option<PathBuf>> {
        match self {
            Figure::Line { stem, plot } => save_line_plot(dir, stem, plot),
            Figure::Heat { stem, map } => save_heat_map(dir, stem, map).map(Some),
        }
    }
}

fn err_pct(r: &TrialRecord) -> f64 {
    100.0 * (1.0 - r.test_acc.unwrap_or(f64::NAN))
}

fn gap_pct(r: &TrialRecord) -> f64 {
    100.0 * (r.train_acc.unwrap_or(f64::NAN) - r.test_acc.unwrap_or(f64::NAN))
}

/// `(x, mean, std)` of `metric` over `rows` (std 0 for one row: no error bar).
fn point(x: f64, rows: &[&TrialRecord], metric: fn(&TrialRecord) -> f64) -> (f64, f64, f64) {
    let v: Vec<f64> = rows.iter().map(|r| metric(r)).collect();
    let (m, sd) = mean_std(&v);
    (x, m, sd.unwrap_or(0.0))
}

/// The gain over the paired baseline as an alpha x T heat map, one per family of cells that
/// differ only in alpha, beta and T (so a student size, a soft loss, ... each gets its own).
fn heat_maps(a: &Analysis) -> Vec<Figure> {
    let families = a.families(&["temperature", "alpha", "beta"]);
    let mut out = Vec::new();
    for f in &families {
        let weights = |c: &Cell| {
            (
                c.first().alpha.unwrap_or(f64::NAN),
                c.first().beta.unwrap_or(f64::NAN),
            )
        };
        let mut rows: Vec<(f64, f64)> = Vec::new();
        let mut temps: Vec<f64> = Vec::new();
        for c in &f.cells {
            if !rows.contains(&weights(c)) {
                rows.push(weights(c));
            }
            if let Some(t) = c.temperature().filter(|t| !temps.contains(t)) {
                temps.push(t);
            }
        }
        if rows.len() < 2 || temps.len() < 2 {
            continue;
        }
        rows.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.total_cmp(&y.1)));
        temps.sort_by(f64::total_cmp);
        let values = rows
            .iter()
            .map(|&w| {
                temps
                    .iter()
                    .map(|&t| {
                        let cell = f
                            .cells
                            .iter()
                            .find(|c| weights(c) == w && c.temperature() == Some(t))?;
                        cell.comparison().map(|cmp| cmp.gain.0)
                    })
                    .collect()
            })
            .collect();
        let complement = rows.iter().all(|(al, be)| (al + be - 1.0).abs() < 1e-9);
        let title = format!(
            "KD gain over baseline, test points (red: better, blue: worse), {}",
            f.label
        );
        let stem = if out.is_empty() {
            "gain_alpha_temperature".to_string()
        } else {
            format!("gain_alpha_temperature_{}", out.len() + 1)
        };
        out.push(Figure::Heat {
            stem,
            map: HeatMap {
                title,
                x_label: "temperature T".into(),
                y_label: if complement {
                    "alpha (beta = 1 - alpha)"
                } else {
                    "alpha / beta"
                }
                .into(),
                cols: temps.iter().map(|t| format!("{t}")).collect(),
                rows: rows
                    .iter()
                    .map(|(al, be)| {
                        if complement {
                            format!("{al}")
                        } else {
                            format!("{al} / {be}")
                        }
                    })
                    .collect(),
                values,
                counts: false,
            },
        });
    }
    out
}

/// Test error of the best KD cell of each student (chosen on validation) and of that cell's
/// paired baselines, over the student's parameter count: means over the seeds that did not
/// collapse, the collapsed ones drawn apart.
fn compression_curve(best: &[&Cell]) -> Figure {
    let mut kd_pts = Vec::new();
    let mut base_pts = Vec::new();
    let mut outliers = Vec::new();
    let mut lost = Vec::new();
    for cell in best {
        let p = cell.first().params as f64;
        let healthy = cell.healthy();
        if healthy.is_empty() {
            lost.push((p, 0));
        } else {
            kd_pts.push(point(p, &healthy, err_pct));
        }
        outliers.extend(cell.collapsed().iter().map(|r| Outlier {
            x: p,
            y: err_pct(r),
            color: 0,
        }));
        let base: Vec<&TrialRecord> = cell
            .baselines()
            .into_iter()
            .filter(|b| !collapsed(b, None))
            .collect();
        if !base.is_empty() {
            base_pts.push(point(p, &base, err_pct));
        }
    }
    kd_pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    base_pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    Figure::Line {
        stem: "error_vs_params".into(),
        plot: LinePlot {
            title: "Test error vs student size: best KD cell vs baseline".into(),
            x_label: "student parameters (log scale)".into(),
            y_label: "test error (%)".into(),
            log_x: true,
            series: vec![
                Series {
                    name: "KD, best cell by validation accuracy".into(),
                    points: kd_pts,
                    dashed: false,
                    color: 0,
                },
                Series {
                    name: "hard targets only (its paired baselines)".into(),
                    points: base_pts,
                    dashed: true,
                    color: 1,
                },
            ],
            y_limits: Some((0.0, 100.0)),
            outliers,
            lost,
            ..LinePlot::default()
        },
    }
}

/// One accuracy of an epoch row (validation or test).
type Accuracy = fn(&EpochRecord) -> Option<f64>;

/// Validation error per epoch of the best KD cell (by validation) against its paired
/// baselines, and their test error at the epochs where it was measured (`train.test_every`:
/// the best validation epoch and the last, or also every N).
fn learning_curves(cell: &Cell, epochs: &[EpochRecord]) -> Option<Figure> {
    let curve = |ids: &[&str], acc: Accuracy| -> Vec<(f64, f64, f64)> {
        let mine: Vec<&EpochRecord> = epochs
            .iter()
            .filter(|e| ids.contains(&e.trial_id.as_str()))
            .collect();
        let max_epoch = mine.iter().map(|e| e.epoch).max().unwrap_or(0);
        (1..=max_epoch)
            .filter_map(|ep| {
                let e: Vec<f64> = mine
                    .iter()
                    .filter(|e| e.epoch == ep)
                    .filter_map(|e| acc(e))
                    .map(|a| 100.0 * (1.0 - a))
                    .collect();
                (!e.is_empty()).then(|| {
                    let (m, sd) = mean_std(&e);
                    (ep as f64, m, sd.unwrap_or(0.0))
                })
            })
            .collect()
    };
    // Seeds that collapsed are left out (and said so): their error would hide the others'.
    let kd_ids: Vec<&str> = cell.healthy().iter().map(|r| r.trial_id.as_str()).collect();
    let apart = match cell.kd.len() - kd_ids.len() {
        0 => String::new(),
        n => format!(" ({n} collapsed seed(s) left out)"),
    };
    let base_ids: Vec<&str> = cell
        .baselines()
        .iter()
        .map(|r| r.trial_id.as_str())
        .collect();
    let val: Accuracy = |e| e.val_acc;
    let test: Accuracy = |e| e.test_acc;
    let series = [
        (
            format!("KD {}, validation{apart}", cell.label),
            &kd_ids,
            val,
            false,
            0,
        ),
        (
            "its paired baselines, validation".to_string(),
            &base_ids,
            val,
            true,
            1,
        ),
        (
            format!("KD {}, test where measured{apart}", cell.label),
            &kd_ids,
            test,
            true,
            2,
        ),
        (
            "its paired baselines, test where measured".to_string(),
            &base_ids,
            test,
            true,
            3,
        ),
    ];
    let series: Vec<Series> = series
        .into_iter()
        .map(|(name, ids, acc, dashed, color)| Series {
            name,
            points: curve(ids, acc),
            dashed,
            color,
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if series.is_empty() {
        return None;
    }
    Some(Figure::Line {
        stem: "learning_curves".into(),
        plot: LinePlot {
            title: format!("Learning curves: best KD cell ({}) vs baseline", cell.label),
            x_label: "epoch".into(),
            y_label: "error (%)".into(),
            log_x: false,
            series,
            y_limits: Some((0.0, 100.0)),
            ..LinePlot::default()
        },
    })
}

/// Every figure the analysis supports, not yet drawn.
pub fn figures(a: &Analysis, epochs: &[EpochRecord]) -> Vec<Figure> {
    if a.cells.is_empty() {
        return vec![];
    }
    let by_t = a.families_with_lost(&["temperature"]);
    let mut error = temperature::versus_temperature(
        &by_t,
        err_pct,
        (
            "Test error vs temperature (mean ± std over seeds)",
            "Test error vs temperature (mean ± std over seeds that did not collapse)",
        ),
        "test error (%)",
        (0.0, 100.0),
    );
    error.refs = temperature::teacher_lines(a);
    let mut out = vec![Figure::Line {
        stem: "error_vs_temperature".into(),
        plot: error,
    }];
    out.extend(heat_maps(a));
    let best = a.best_cells();
    if !best.is_empty() {
        out.push(compression_curve(&best));
    }
    out.push(Figure::Line {
        stem: "gap_vs_temperature".into(),
        plot: temperature::versus_temperature(
            &by_t,
            gap_pct,
            (
                "Generalisation gap (train - test accuracy) vs temperature",
                "Generalisation gap vs temperature (collapsed seeds apart)",
            ),
            "train - test accuracy (points)",
            (-100.0, 100.0),
        ),
    });
    let overall = best.iter().max_by(|x, y| {
        x.val_mean()
            .unwrap_or(0.0)
            .total_cmp(&y.val_mean().unwrap_or(0.0))
    });
    out.extend(overall.and_then(|c| learning_curves(c, epochs)));
    out
}

/// Draw every figure of the analysis into `dir` (in parallel: each is independent). Returns
/// `(title, png path)` pairs in a fixed order.
pub fn render_figures(
    dir: &Path,
    a: &Analysis,
    epochs: &[EpochRecord],
) -> Result<Vec<(String, PathBuf)>> {
    let figs = figures(a, epochs);
    let drawn: Vec<Result<Option<PathBuf>>> = figs.par_iter().map(|f| f.draw(dir)).collect();
    let mut out = Vec::new();
    for (f, d) in figs.iter().zip(drawn) {
        if let Some(png) = d? {
            out.push((f.title().to_string(), png));
        }
    }
    Ok(out)
}

/// Draw `figure` into `dir`: its title and PNG, none when it has nothing to show.
pub fn draw_figure(dir: &Path, figure: &Figure) -> Result<Option<(String, PathBuf)>> {
    Ok(figure
        .draw(dir)?
        .map(|png| (figure.title().to_string(), png)))
}

/// Confusion matrices of the KD students where classes were missing from their transfer set:
/// the KD cell chosen on validation (all its seeds, mean counts), with raw logits and after the
/// bias shift. Nothing when no class was missing or no matrix was recorded.
pub fn confusion_figures(
    dir: &Path,
    rows: &[TrialRecord],
    confusion: &[crate::record::ConfusionRecord],
) -> Result<Vec<(String, PathBuf)>> {
    let a = Analysis::new(rows);
    let Some(cell) = a
        .cells
        .iter()
        .filter(|c| c.first().shifted_classes.is_some())
        .max_by(|x, y| {
            x.val_mean()
                .unwrap_or(0.0)
                .total_cmp(&y.val_mean().unwrap_or(0.0))
        })
    else {
        return Ok(vec![]);
    };
    let ids: Vec<&str> = cell.kd.iter().map(|r| r.trial_id.as_str()).collect();
    let classes = confusion
        .iter()
        .filter(|c| ids.contains(&c.trial_id.as_str()))
        .map(|c| c.label.max(c.predicted) + 1)
        .max()
        .unwrap_or(0) as usize;
    if classes == 0 {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for (shifted, stem, what) in [
        (false, "confusion_raw", "raw logits"),
        (true, "confusion_shifted", "bias shift applied"),
    ] {
        let mut values = vec![vec![Some(0.0); classes]; classes];
        let mut any = false;
        for c in confusion
            .iter()
            .filter(|c| c.shifted == shifted && ids.contains(&c.trial_id.as_str()))
        {
            any = true;
            if let Some(v) = values[c.label as usize][c.predicted as usize].as_mut() {
                *v += c.count as f64 / ids.len() as f64;
            }
        }
        if !any {
            continue;
        }
        let names: Vec<String> = (0..classes).map(|c| c.to_string()).collect();
        let map = HeatMap {
            title: format!("Test confusion of the best KD cell, {what}"),
            x_label: "predicted class".into(),
            y_label: "true class".into(),
            cols: names.clone(),
            rows: names,
            values,
            counts: true,
        };
        let png = save_heat_map(dir, stem, &map)?;
        out.push((map.title, png));
    }
    Ok(out)
}
