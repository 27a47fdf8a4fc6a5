//! The report's figures, drawn with plotters to PNG and SVG from trial and epoch rows alone.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{mean_std, EpochRow, ReportError, Result, TrialRow};

/// One line of a plot: points `(x, mean, std)`; `std` draws an error bar when > 0.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64, f64)>,
    pub dashed: bool,
}

/// A horizontal band `mid ± half` across the whole x range (the baseline).
#[derive(Debug, Clone)]
pub struct Band {
    pub name: String,
    pub mid: f64,
    pub half: f64,
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
    move |e| ReportError::Io {
        file: file.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

const SIZE: (u32, u32) = (900, 600);

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
            for (i, band) in plot.bands.iter().enumerate() {
                let c = color(i);
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
            for (i, s) in plot.series.iter().enumerate() {
                let c = color(i);
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
    draw_lines(BitMapBackend::new(&png, SIZE).into_drawing_area(), plot).map_err(plot_err(&png))?;
    draw_lines(SVGBackend::new(&svg, SIZE).into_drawing_area(), plot).map_err(plot_err(&svg))?;
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
            let t = (v / scale).clamp(-1.0, 1.0);
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
            chart.draw_series(std::iter::once(Text::new(
                format!("{v:+.2}"),
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
    draw_heat(BitMapBackend::new(&png, SIZE).into_drawing_area(), h).map_err(plot_err(&png))?;
    draw_heat(SVGBackend::new(&svg, SIZE).into_drawing_area(), h).map_err(plot_err(&svg))?;
    Ok(png)
}

// ---------------------------------------------------------------------------------------------
// From rows to figures.

fn ok(r: &TrialRow) -> bool {
    r.status == "ok" && r.test_acc.is_some()
}

/// `arch hidden`, the student size label.
pub fn student_of(r: &TrialRow) -> String {
    format!("{} {}", r.arch, r.hidden)
}

fn err_pct(r: &TrialRow) -> f64 {
    100.0 * (1.0 - r.test_acc.unwrap_or(f64::NAN))
}

fn distinct<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn sorted_f64(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// The baselines paired with the KD rows of `student`.
fn baselines_of<'a>(rows: &'a [TrialRow], student: &str) -> Vec<&'a TrialRow> {
    let ids: Vec<&String> = rows
        .iter()
        .filter(|r| r.kind == "kd" && student_of(r) == student)
        .filter_map(|r| r.baseline_id.as_ref())
        .collect();
    rows.iter()
        .filter(|b| ok(b) && ids.contains(&&b.trial_id))
        .collect()
}

/// `metric` of the baselines of `student`, as a mean ± std band (none without baselines).
fn baseline_band(
    rows: &[TrialRow],
    student: &str,
    metric: impl Fn(&TrialRow) -> f64,
) -> Option<Band> {
    let b: Vec<f64> = baselines_of(rows, student)
        .into_iter()
        .map(metric)
        .collect();
    (!b.is_empty()).then(|| {
        let (mid, half) = mean_std(&b);
        Band {
            name: format!("baseline {student} (mean ± std)"),
            mid,
            half,
        }
    })
}

/// `(T, mean, std)` of `metric` over the KD rows that `keep` selects, at each temperature that
/// has any.
fn over_temperature(
    kd: &[&TrialRow],
    temps: &[f64],
    metric: impl Fn(&TrialRow) -> f64,
    keep: impl Fn(&TrialRow) -> bool,
) -> Vec<(f64, f64, f64)> {
    temps
        .iter()
        .filter_map(|&t| {
            let v: Vec<f64> = kd
                .iter()
                .filter(|r| r.temperature == Some(t) && keep(r))
                .map(|r| metric(r))
                .collect();
            (!v.is_empty()).then(|| {
                let (m, sd) = mean_std(&v);
                (t, m, sd)
            })
        })
        .collect()
}

fn kd_rows(rows: &[TrialRow]) -> Vec<&TrialRow> {
    rows.iter().filter(|r| r.kind == "kd" && ok(r)).collect()
}

/// The KD cell (all its seeds) with the best mean validation accuracy, per student.
pub fn best_cells(rows: &[TrialRow]) -> Vec<(String, Vec<&TrialRow>)> {
    let kd = kd_rows(rows);
    let students = distinct(kd.iter().map(|r| student_of(r)));
    let mut out = Vec::new();
    for s in students {
        let mine: Vec<&TrialRow> = kd.iter().copied().filter(|r| student_of(r) == s).collect();
        let labels = distinct(mine.iter().map(|r| crate::cell_label(r)));
        let best = labels
            .into_iter()
            .map(|l| {
                let cell: Vec<&TrialRow> = mine
                    .iter()
                    .copied()
                    .filter(|r| crate::cell_label(r) == l)
                    .collect();
                let val = mean_std(
                    &cell
                        .iter()
                        .map(|r| r.val_acc.unwrap_or(0.0))
                        .collect::<Vec<_>>(),
                )
                .0;
                (val, cell)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, cell)) = best {
            out.push((s, cell));
        }
    }
    out
}

/// `metric` of the KD rows against temperature: a line per student (and per alpha when alpha
/// varies), mean ± std over seeds, each student's paired baselines as a band.
fn versus_temperature(
    rows: &[TrialRow],
    kd: &[&TrialRow],
    (students, alphas, temps): (&[String], &[f64], &[f64]),
    metric: impl Fn(&TrialRow) -> f64 + Copy,
    title: &str,
    y_label: &str,
) -> LinePlot {
    let mut series = Vec::new();
    let mut bands = Vec::new();
    for s in students {
        for &a in alphas {
            let pts = over_temperature(kd, temps, metric, |r| {
                student_of(r) == *s && r.alpha == Some(a)
            });
            if !pts.is_empty() {
                let name = if alphas.len() > 1 {
                    format!("KD {s}, alpha={a}")
                } else {
                    format!("KD {s}")
                };
                series.push(Series {
                    name,
                    points: pts,
                    dashed: false,
                });
            }
        }
        bands.extend(baseline_band(rows, s, metric));
    }
    LinePlot {
        title: title.to_string(),
        x_label: "temperature T (log scale)".into(),
        y_label: y_label.into(),
        log_x: true,
        series,
        bands,
    }
}

/// Render every figure the rows support into `dir`. Returns `(title, png path)` pairs.
pub fn render_figures(
    dir: &Path,
    rows: &[TrialRow],
    epochs: &[EpochRow],
) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let kd = kd_rows(rows);
    if kd.is_empty() {
        return Ok(out);
    }
    let students = distinct(kd.iter().map(|r| student_of(r)));
    let alphas = sorted_f64(kd.iter().filter_map(|r| r.alpha).collect());
    let temps = sorted_f64(kd.iter().filter_map(|r| r.temperature).collect());

    // 1. Test error vs temperature, a line per student (and alpha), baseline as a band.
    let plot = versus_temperature(
        rows,
        &kd,
        (&students, &alphas, &temps),
        err_pct,
        "Test error vs temperature (mean ± std over seeds)",
        "test error (%)",
    );
    out.extend(save_line_plot(dir, "error_vs_temperature", &plot)?.map(|p| (plot.title, p)));

    // 2. Heat map of the gain over baseline, alpha x temperature (first student), when alpha varies.
    if alphas.len() > 1 && temps.len() > 1 {
        let s = &students[0];
        let values = alphas
            .iter()
            .map(|&a| {
                temps
                    .iter()
                    .map(|&t| {
                        let gains: Vec<f64> = kd
                            .iter()
                            .filter(|r| {
                                student_of(r) == *s
                                    && r.alpha == Some(a)
                                    && r.temperature == Some(t)
                            })
                            .filter_map(|r| {
                                let b = rows.iter().find(|b| {
                                    Some(&b.trial_id) == r.baseline_id.as_ref() && ok(b)
                                })?;
                                Some(100.0 * (r.test_acc? - b.test_acc?))
                            })
                            .collect();
                        (!gains.is_empty()).then(|| mean_std(&gains).0)
                    })
                    .collect()
            })
            .collect();
        let title = format!("KD gain over baseline, test points (red: better, blue: worse), {s}");
        let h = HeatMap {
            title: title.clone(),
            x_label: "temperature T".into(),
            y_label: "alpha".into(),
            cols: temps.iter().map(|t| format!("{t}")).collect(),
            rows: alphas.iter().map(|a| format!("{a}")).collect(),
            values,
        };
        out.push((title, save_heat_map(dir, "gain_alpha_temperature", &h)?));
    }

    // 3. Compression curve: error vs parameters, best KD cell (by validation) vs baseline.
    let best = best_cells(rows);
    let params_of = |s: &str| {
        kd.iter()
            .find(|r| student_of(r) == s)
            .map(|r| r.params as f64)
    };
    let mut kd_pts = Vec::new();
    let mut base_pts = Vec::new();
    for (s, cell) in &best {
        let Some(p) = params_of(s) else { continue };
        let (m, sd) = mean_std(&cell.iter().map(|r| err_pct(r)).collect::<Vec<_>>());
        kd_pts.push((p, m, sd));
        base_pts.extend(baseline_band(rows, s, err_pct).map(|b| (p, b.mid, b.half)));
    }
    kd_pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    base_pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let title = "Test error vs student size: best KD cell vs baseline".to_string();
    let plot = LinePlot {
        title: title.clone(),
        x_label: "student parameters (log scale)".into(),
        y_label: "test error (%)".into(),
        log_x: true,
        series: vec![
            Series {
                name: "KD, best cell by validation accuracy".into(),
                points: kd_pts,
                dashed: false,
            },
            Series {
                name: "hard targets only (baseline)".into(),
                points: base_pts,
                dashed: true,
            },
        ],
        bands: vec![],
    };
    out.extend(save_line_plot(dir, "error_vs_params", &plot)?.map(|p| (title, p)));

    // 4. Generalisation gap vs temperature.
    let gap =
        |r: &TrialRow| 100.0 * (r.train_acc.unwrap_or(f64::NAN) - r.test_acc.unwrap_or(f64::NAN));
    let plot = versus_temperature(
        rows,
        &kd,
        (&students, &alphas, &temps),
        gap,
        "Generalisation gap (train - test accuracy) vs temperature",
        "train - test accuracy (points)",
    );
    out.extend(save_line_plot(dir, "gap_vs_temperature", &plot)?.map(|p| (plot.title, p)));

    // 5. Learning curves of the best KD cell overall vs its baseline.
    let overall = best.iter().max_by(|a, b| {
        let v = |c: &Vec<&TrialRow>| {
            mean_std(
                &c.iter()
                    .map(|r| r.val_acc.unwrap_or(0.0))
                    .collect::<Vec<_>>(),
            )
            .0
        };
        v(&a.1).total_cmp(&v(&b.1))
    });
    if let Some((s, cell)) = overall {
        let curve = |ids: Vec<&String>| -> Vec<(f64, f64, f64)> {
            let max_epoch = epochs
                .iter()
                .filter(|e| ids.contains(&&e.trial_id))
                .map(|e| e.epoch)
                .max()
                .unwrap_or(0);
            (1..=max_epoch)
                .filter_map(|ep| {
                    let e: Vec<f64> = epochs
                        .iter()
                        .filter(|e| {
                            e.epoch == ep && ids.contains(&&e.trial_id) && e.test_acc.is_finite()
                        })
                        .map(|e| 100.0 * (1.0 - e.test_acc))
                        .collect();
                    (!e.is_empty()).then(|| {
                        let (m, sd) = mean_std(&e);
                        (ep as f64, m, sd)
                    })
                })
                .collect()
        };
        let kd_ids: Vec<&String> = cell.iter().map(|r| &r.trial_id).collect();
        let base_ids: Vec<&String> = cell.iter().filter_map(|r| r.baseline_id.as_ref()).collect();
        let kd_curve = curve(kd_ids);
        if !kd_curve.is_empty() {
            let title = format!(
                "Learning curves: best KD cell ({}) vs baseline",
                crate::cell_label(cell[0])
            );
            let plot = LinePlot {
                title: format!("Learning curves, {s}: best KD cell vs baseline"),
                x_label: "epoch".into(),
                y_label: "test error (%)".into(),
                log_x: false,
                series: vec![
                    Series {
                        name: format!("KD {}", crate::cell_label(cell[0])),
                        points: kd_curve,
                        dashed: false,
                    },
                    Series {
                        name: "baseline".into(),
                        points: curve(base_ids),
                        dashed: true,
                    },
                ],
                bands: vec![],
            };
            out.extend(save_line_plot(dir, "learning_curves", &plot)?.map(|p| (title, p)));
        }
    }
    Ok(out)
}
