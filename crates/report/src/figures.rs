//! The report's figures, drawn with plotters to PNG and SVG from trial and epoch rows alone.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use rayon::prelude::*;

use crate::analysis::{Analysis, Cell, Family};
use crate::record::{EpochRecord, TrialRecord};
use crate::stats::mean_std;
use crate::{ReportError, Result};

/// One line of a plot: points `(x, mean, std)`; `std` draws an error bar when > 0.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64, f64)>,
    pub dashed: bool,
    /// Palette index, so a line and its baseline band share a colour.
    pub color: usize,
}

/// A horizontal band `mid ± half` across the whole x range (the baseline).
#[derive(Debug, Clone)]
pub struct Band {
    pub name: String,
    pub mid: f64,
    pub half: f64,
    pub color: usize,
}

#[derive(Debug, Clone)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub series: Vec<Series>,
    pub bands: Vec<Band>,
}

fn plot_err<E: std::error::Error + Send + Sync + 'static>(
    file: &Path,
) -> impl FnOnce(E) -> ReportError + '_ {
    move |e| ReportError::Plot {
        file: file.to_path_buf(),
        source: Box::new(e),
    }
}

const SIZE: (u32, u32) = (900, 600);

/// Draw into a temporary file beside `path` (named to end as `path` does, so the backend picks
/// the same format) and rename it over `path`: a figure is whole or absent, never truncated,
/// and no temporary file stays when drawing fails (a full disk).
fn draw_atomic<E: std::error::Error + Send + Sync + 'static>(
    path: &Path,
    draw: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> Result<()> {
    let mut name = crate::temp_path(path).into_os_string();
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    let tmp = PathBuf::from(name);
    let done = draw(&tmp).map_err(plot_err(path)).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|source| ReportError::Io {
            file: path.to_path_buf(),
            source,
        })
    });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

fn color(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    PALETTE[i % PALETTE.len()]
}

/// A log-scale axis is drawn as a linear axis over log2(x), labelled with 2^x, so the ticks land
/// on the powers of two that sweeps use (T = 1, 2, 4, ...).
fn x_pos(plot: &LinePlot, x: f64) -> f64 {
    if plot.log_x {
        x.log2()
    } else {
        x
    }
}

/// Compact tick text: 2, 16, 0.5, 33k, 1.3M.
pub fn compact(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round())
    } else {
        format!("{:.2}", v).trim_end_matches('0').to_string()
    }
}

fn bounds(plot: &LinePlot) -> ((f64, f64), (f64, f64)) {
    let xs: Vec<f64> = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| x_pos(plot, p.0)))
        .collect();
    let mut ys: Vec<f64> = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|p| [p.1 - p.2, p.1 + p.2]))
        .collect();
    ys.extend(
        plot.bands
            .iter()
            .flat_map(|b| [b.mid - b.half, b.mid + b.half]),
    );
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (mut x0, mut x1) = (min(&xs), max(&xs));
    if x0 == x1 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    } else {
        let pad = 0.06 * (x1 - x0);
        (x0, x1) = (x0 - pad, x1 + pad);
    }
    let (y0, y1) = (min(&ys), max(&ys));
    let range = (y1 - y0).max(0.1);
    // Room above the data for the legend (one line per entry).
    let legend = (plot.series.len() + plot.bands.len()) as f64;
    (
        (x0, x1),
        (y0 - 0.08 * range, y1 + range * (0.1 + 0.075 * legend)),
    )
}

fn draw_lines<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    plot: &LinePlot,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let ((x0, x1), (y0, y1)) = bounds(plot);
    let mut chart = ChartBuilder::on(&root)
        .caption(&plot.title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let fmt_x = |x: &f64| {
        if plot.log_x {
            compact(x.exp2())
        } else {
            compact(*x)
        }
    };
    let x_ticks = if plot.log_x {
        ((x1.floor() - x0.ceil()) as usize + 1).clamp(2, 12)
    } else {
        10
    };
    {
        {
            chart
                .configure_mesh()
                .x_labels(x_ticks)
                .x_label_formatter(&fmt_x)
                .x_desc(plot.x_label.as_str())
                .y_desc(plot.y_label.as_str())
                .axis_desc_style(("sans-serif", 18))
                .draw()?;
            for band in &plot.bands {
                let c = color(band.color);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0, band.mid - band.half), (x1, band.mid + band.half)],
                    c.mix(0.15).filled(),
                )))?;
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(x0, band.mid), (x1, band.mid)],
                        6,
                        4,
                        c.stroke_width(2),
                    ))?
                    .label(band.name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 20, y + 5)], c.mix(0.3).filled())
                    });
            }
            for s in &plot.series {
                let c = color(s.color);
                let pts: Vec<(f64, f64)> =
                    s.points.iter().map(|p| (x_pos(plot, p.0), p.1)).collect();
                let anno = if s.dashed {
                    chart.draw_series(DashedLineSeries::new(
                        pts.clone(),
                        8,
                        5,
                        c.stroke_width(2),
                    ))?
                } else {
                    chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                };
                anno.label(s.name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
                chart.draw_series(s.points.iter().filter(|p| p.2 > 0.0).map(|&(x, m, e)| {
                    ErrorBar::new_vertical(x_pos(plot, x), m - e, m, m + e, c.stroke_width(1), 8)
                }))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 15))
                .position(SeriesLabelPosition::UpperRight)
                .draw()?;
        }
    }
    root.present()
}

/// Draw `plot` to `dir/stem.png` and `dir/stem.svg`. Returns the PNG's path, or `None` when the
/// plot has no points.
pub fn save_line_plot(dir: &Path, stem: &str, plot: &LinePlot) -> Result<Option<PathBuf>> {
    if plot.series.iter().all(|s| s.points.is_empty()) {
        return Ok(None);
    }
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Io {
        file: dir.to_path_buf(),
        source: e,
    })?;
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    draw_atomic(&png, |f| {
        draw_lines(BitMapBackend::new(f, SIZE).into_drawing_area(), plot)
    })?;
    draw_atomic(&svg, |f| {
        draw_lines(SVGBackend::new(f, SIZE).into_drawing_area(), plot)
    })?;
    Ok(Some(png))
}

/// A heat map of `values[row][col]` (None = no data) with row and column labels.
#[derive(Debug, Clone)]
pub struct HeatMap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub cols: Vec<String>,
    pub rows: Vec<String>,
    pub values: Vec<Vec<Option<f64>>>,
    /// Counts (white to red, no sign, no decimals) rather than signed gains.
    pub counts: bool,
}

fn draw_heat<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    h: &HeatMap,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (nc, nr) = (h.cols.len().max(1), h.rows.len().max(1));
    let scale = h
        .values
        .iter()
        .flatten()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-9);
    let mut chart = ChartBuilder::on(&root)
        .caption(&h.title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        // A segmented range a..b has b - a + 1 segments.
        .build_cartesian_2d((0..nc - 1).into_segmented(), (0..nr - 1).into_segmented())?;
    let label = |names: &[String], v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let (cols, rows) = (h.cols.clone(), h.rows.clone());
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(nc + 1)
        .y_labels(nr + 1)
        .x_label_formatter(&|v| label(&cols, v))
        .y_label_formatter(&|v| label(&rows, v))
        .x_desc(h.x_label.as_str())
        .y_desc(h.y_label.as_str())
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 16))
        .draw()?;
    for (r, row) in h.values.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            let Some(v) = v else { continue };
            // Blue for a loss, red for a gain, white for none.
            // Counts: the diagonal would wash out the errors, so they scale by the largest
            // off-diagonal count.
            let t = if h.counts {
                let off = h
                    .values
                    .iter()
                    .enumerate()
                    .flat_map(|(i, row)| row.iter().enumerate().filter(move |(j, _)| *j != i))
                    .filter_map(|(_, v)| *v)
                    .fold(1.0f64, f64::max);
                (v / off).sqrt().clamp(0.0, 1.0)
            } else {
                (v / scale).clamp(-1.0, 1.0)
            };
            let fill = if t >= 0.0 {
                RGBColor(255, (255.0 * (1.0 - t)) as u8, (255.0 * (1.0 - t)) as u8)
            } else {
                RGBColor((255.0 * (1.0 + t)) as u8, (255.0 * (1.0 + t)) as u8, 255)
            };
            use SegmentValue::{CenterOf, Exact};
            chart.draw_series(std::iter::once(Rectangle::new(
                [(Exact(c), Exact(r)), (Exact(c + 1), Exact(r + 1))],
                fill.filled(),
            )))?;
            let ink = if t.abs() > 0.6 { WHITE } else { BLACK };
            let text = if h.counts {
                format!("{v:.0}")
            } else {
                format!("{v:+.2}")
            };
            chart.draw_series(std::iter::once(Text::new(
                text,
                (CenterOf(c), CenterOf(r)),
                ("sans-serif", 18).into_font().color(&ink),
            )))?;
        }
    }
    root.present()
}

pub fn save_heat_map(dir: &Path, stem: &str, h: &HeatMap) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Io {
        file: dir.to_path_buf(),
        source: e,
    })?;
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    draw_atomic(&png, |f| {
        draw_heat(BitMapBackend::new(f, SIZE).into_drawing_area(), h)
    })?;
    draw_atomic(&svg, |f| {
        draw_heat(SVGBackend::new(f, SIZE).into_drawing_area(), h)
    })?;
    Ok(png)
}

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

/// `metric` of each KD cell family against temperature (a line per family, mean ± std over
/// seeds) with the family's own paired baselines as a band. Families that share their
/// baselines (an alpha sweep) share one band.
fn versus_temperature(
    families: &[Family],
    metric: fn(&TrialRecord) -> f64,
    title: &str,
    y_label: &str,
) -> LinePlot {
    let mut series = Vec::new();
    // (baseline ids, student, family label, band)
    let mut bands: Vec<(Vec<&str>, &str, &str, Band)> = Vec::new();
    for (i, f) in families.iter().enumerate() {
        let mut cells: Vec<&&Cell> = f.cells.iter().collect();
        cells.sort_by(|a, b| {
            a.temperature()
                .unwrap_or(0.0)
                .total_cmp(&b.temperature().unwrap_or(0.0))
        });
        let points = cells
            .iter()
            .filter_map(|c| Some(point(c.temperature()?, &c.kd, metric)))
            .collect();
        series.push(Series {
            name: format!("KD {}", f.label),
            points,
            dashed: false,
            color: i,
        });
        let base = f.baselines();
        let mut ids: Vec<&str> = base.iter().map(|b| b.trial_id.as_str()).collect();
        ids.sort_unstable();
        if base.is_empty() || bands.iter().any(|(other, ..)| *other == ids) {
            continue;
        }
        let (_, mid, half) = point(0.0, &base, metric);
        let band = Band {
            name: String::new(),
            mid,
            half,
            color: i,
        };
        bands.push((ids, &f.cells[0].student, &f.label, band));
    }
    // A band is named by its student when that is unambiguous, else by its family.
    let names: Vec<String> = bands
        .iter()
        .map(|(_, student, label, _)| {
            let shared = bands.iter().filter(|(_, s, ..)| s == student).count() > 1;
            format!(
                "baseline {} (mean ± std)",
                if shared { label } else { student }
            )
        })
        .collect();
    let bands = bands
        .into_iter()
        .zip(names)
        .map(|((.., mut band), name)| {
            band.name = name;
            band
        })
        .collect();
    LinePlot {
        title: title.to_string(),
        x_label: "temperature T (log scale)".into(),
        y_label: y_label.into(),
        log_x: true,
        series,
        bands,
    }
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
/// paired baselines, over the student's parameter count.
fn compression_curve(best: &[&Cell]) -> Figure {
    let mut kd_pts = Vec::new();
    let mut base_pts = Vec::new();
    for cell in best {
        let p = cell.first().params as f64;
        kd_pts.push(point(p, &cell.kd, err_pct));
        let base = cell.baselines();
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
            bands: vec![],
        },
    }
}

/// Test error per epoch of the best KD cell (by validation) against its paired baselines.
fn learning_curves(cell: &Cell, epochs: &[EpochRecord]) -> Option<Figure> {
    let curve = |ids: Vec<&str>| -> Vec<(f64, f64, f64)> {
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
                    .filter_map(|e| e.test_acc)
                    .map(|a| 100.0 * (1.0 - a))
                    .collect();
                (!e.is_empty()).then(|| {
                    let (m, sd) = mean_std(&e);
                    (ep as f64, m, sd.unwrap_or(0.0))
                })
            })
            .collect()
    };
    let kd = curve(cell.kd.iter().map(|r| r.trial_id.as_str()).collect());
    if kd.is_empty() {
        return None;
    }
    let base = curve(
        cell.baselines()
            .iter()
            .map(|r| r.trial_id.as_str())
            .collect(),
    );
    Some(Figure::Line {
        stem: "learning_curves".into(),
        plot: LinePlot {
            title: format!("Learning curves: best KD cell ({}) vs baseline", cell.label),
            x_label: "epoch".into(),
            y_label: "test error (%)".into(),
            log_x: false,
            series: vec![
                Series {
                    name: format!("KD {}", cell.label),
                    points: kd,
                    dashed: false,
                    color: 0,
                },
                Series {
                    name: "its paired baselines".into(),
                    points: base,
                    dashed: true,
                    color: 1,
                },
            ],
            bands: vec![],
        },
    })
}

/// Every figure the analysis supports, not yet drawn.
pub fn figures(a: &Analysis, epochs: &[EpochRecord]) -> Vec<Figure> {
    if a.cells.is_empty() {
        return vec![];
    }
    let by_t = a.families(&["temperature"]);
    let mut out = vec![Figure::Line {
        stem: "error_vs_temperature".into(),
        plot: versus_temperature(
            &by_t,
            err_pct,
            "Test error vs temperature (mean ± std over seeds)",
            "test error (%)",
        ),
    }];
    out.extend(heat_maps(a));
    let best = a.best_cells();
    if !best.is_empty() {
        out.push(compression_curve(&best));
    }
    out.push(Figure::Line {
        stem: "gap_vs_temperature".into(),
        plot: versus_temperature(
            &by_t,
            gap_pct,
            "Generalisation gap (train - test accuracy) vs temperature",
            "train - test accuracy (points)",
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
