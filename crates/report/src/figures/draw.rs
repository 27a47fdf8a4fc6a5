//! Drawing: line plots with error bars and heat maps, to PNG and SVG, each written atomically.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

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
