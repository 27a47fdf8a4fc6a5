//! Drawing: line plots with error bars and heat maps, to PNG and SVG, each written atomically.

use std::path::{Path, PathBuf};

use plotters::coord::types::RangedCoordf64;
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

/// A horizontal reference line across the whole x range (the teacher's test error).
#[derive(Debug, Clone)]
pub struct RefLine {
    pub name: String,
    pub y: f64,
}

/// A trial drawn apart from its line's mean and spread (a collapsed or diverged seed): an x at
/// `(x, y)`, or at the edge of the visible range when `y` is off it (NaN, no value: the top).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outlier {
    pub x: f64,
    pub y: f64,
    pub color: usize,
}

#[derive(Debug, Clone, Default)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub series: Vec<Series>,
    pub bands: Vec<Band>,
    /// The y axis never leaves this range (an error in percent: 0 to 100).
    pub y_limits: Option<(f64, f64)>,
    pub refs: Vec<RefLine>,
    /// Trials left out of the series' means and spreads; they never widen the axes.
    pub outliers: Vec<Outlier>,
    /// `(x, color)` of cells every seed of which is an outlier (no point on their line): a
    /// triangle at the edge, beside their outliers.
    pub lost: Vec<(f64, usize)>,
}

pub(super) fn plot_err<E: std::error::Error + Send + Sync + 'static>(
    file: &Path,
) -> impl FnOnce(E) -> ReportError + '_ {
    move |e| ReportError::Plot {
        file: file.to_path_buf(),
        source: Box::new(e),
    }
}

pub(super) const SIZE: (u32, u32) = (900, 600);

/// Draw into a temporary file beside `path` (named to end as `path` does, so the backend picks
/// the same format) and rename it over `path`: a figure is whole or absent, never truncated,
/// and no temporary file stays when drawing fails (a full disk).
pub(super) fn draw_atomic<E: std::error::Error + Send + Sync + 'static>(
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

pub(super) fn color(i: usize) -> RGBColor {
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

impl LinePlot {
    /// Whether it has anything to draw.
    pub fn is_empty(&self) -> bool {
        self.series.iter().all(|s| s.points.is_empty())
            && self.outliers.is_empty()
            && self.lost.is_empty()
    }

    /// The axes' ranges `((x0, x1), (y0, y1))` (x as drawn: log2 on a log axis). The y range
    /// holds the means ± std, the bands and the reference lines with room above for the
    /// legend, within [`LinePlot::y_limits`]; outliers do not widen it (off it, they sit at its
    /// edge).
    pub fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let xs: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(self.outliers.iter().map(|o| o.x))
            .chain(self.lost.iter().map(|l| l.0))
            .map(|x| x_pos(self, x))
            .collect();
        let mut ys: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().flat_map(|p| [p.1 - p.2, p.1 + p.2]))
            .collect();
        ys.extend(
            self.bands
                .iter()
                .flat_map(|b| [b.mid - b.half, b.mid + b.half]),
        );
        ys.extend(self.refs.iter().map(|r| r.y));
        ys.retain(|y| y.is_finite());
        if ys.is_empty() {
            // Nothing but outliers: their values, else the whole allowed range.
            ys = self.outliers.iter().map(|o| o.y).collect();
            ys.retain(|y| y.is_finite());
            ys.extend(self.y_limits.map(|(lo, hi)| [lo, hi]).into_iter().flatten());
        }
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
        // Room above the data for the legend (one line per entry) and, with outliers, a strip
        // above the legend for those at the top edge.
        let legend = self.legend_entries() as f64;
        let strip = if self.outliers.is_empty() && self.lost.is_empty() {
            0.0
        } else {
            0.08
        };
        let (mut lo, mut hi) = (
            y0 - 0.08 * range,
            y1 + range * (0.1 + strip + 0.075 * legend),
        );
        if let Some((min_y, max_y)) = self.y_limits {
            (lo, hi) = (lo.max(min_y), hi.min(max_y));
        }
        ((x0, x1), (lo, hi))
    }

    fn legend_entries(&self) -> usize {
        self.series.len()
            + self.bands.len()
            + self.refs.len()
            + usize::from(!self.outliers.is_empty())
            + usize::from(!self.lost.is_empty())
    }
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw_lines<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, plot: &LinePlot) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let ((x0, x1), (y0, y1)) = plot.ranges();
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
        draw_series(&mut chart, plot, s)?;
    }
    draw_marks(&mut chart, plot)?;
    let font: TextStyle = ("sans-serif", 15).into_font().into();
    let position = if plot.outliers.is_empty() && plot.lost.is_empty() {
        SeriesLabelPosition::UpperRight
    } else {
        // At the right as UpperRight places it (its width as plotters measures it: the longest
        // label, the 30 px of the legend marks and 10 px margins), but a strip below the top,
        // where the outliers off the axis are drawn.
        let mut widest = 0;
        for name in legend_names(plot) {
            widest = widest.max(root.estimate_text_size(&name, &font)?.0);
        }
        let (w, _) = chart.plotting_area().dim_in_pixel();
        SeriesLabelPosition::Coordinate(w as i32 - (widest as i32 + 50) - 5, 36)
    };
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(font)
        .position(position)
        .draw()?;
    root.present()
}

/// The legend's entries, in the order they are drawn.
fn legend_names(plot: &LinePlot) -> Vec<String> {
    let mut names: Vec<String> = plot.bands.iter().map(|b| b.name.clone()).collect();
    names.extend(plot.series.iter().map(|s| s.name.clone()));
    names.extend(plot.refs.iter().map(|r| r.name.clone()));
    names.extend(outliers_name(plot));
    names.extend(lost_name(plot));
    names
}

fn outliers_name(plot: &LinePlot) -> Option<String> {
    (!plot.outliers.is_empty()).then(|| {
        format!(
            "collapsed seeds ({}): x, at the edge when off the axis",
            plot.outliers.len()
        )
    })
}

fn lost_name(plot: &LinePlot) -> Option<String> {
    (!plot.lost.is_empty())
        .then(|| format!("cells whose every seed collapsed ({})", plot.lost.len()))
}

/// One line: its points joined, each with its error bar.
fn draw_series<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    plot: &LinePlot,
    s: &Series,
) -> DrawResult<DB> {
    let c = color(s.color);
    let pts: Vec<(f64, f64)> = s.points.iter().map(|p| (x_pos(plot, p.0), p.1)).collect();
    let anno = if s.dashed {
        chart.draw_series(DashedLineSeries::new(pts.clone(), 8, 5, c.stroke_width(2)))?
    } else {
        chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
    };
    anno.label(s.name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
    chart.draw_series(s.points.iter().filter(|p| p.2 > 0.0).map(|&(x, m, e)| {
        ErrorBar::new_vertical(x_pos(plot, x), m - e, m, m + e, c.stroke_width(1), 8)
    }))?;
    Ok(())
}

/// The reference lines, the outliers (an x at their value, or at the edge of the visible range
/// when off it, side by side where several share an x) and the cells with no point (a triangle
/// beside their outliers at the edge).
fn draw_marks<DB: DrawingBackend>(chart: &mut Chart<'_, DB>, plot: &LinePlot) -> DrawResult<DB> {
    let (xr, yr) = (chart.x_range(), chart.y_range());
    let (w, h) = chart.plotting_area().dim_in_pixel();
    let px_x = (xr.end - xr.start) / f64::from(w.max(1));
    let px_y = (yr.end - yr.start) / f64::from(h.max(1));
    for r in &plot.refs {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(xr.start, r.y), (xr.end, r.y)],
                3,
                3,
                BLACK.stroke_width(2),
            ))?
            .label(r.name.as_str())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    }
    let (top, bottom) = (yr.end - 10.0 * px_y, yr.start + 10.0 * px_y);
    let mut placed: Vec<(f64, f64)> = Vec::new();
    for o in &plot.outliers {
        let x = x_pos(plot, o.x);
        let y = if o.y.is_nan() || o.y > top {
            top
        } else {
            o.y.max(bottom)
        };
        // Side by side at the edge: the k-th at one x moves 10 px right of the one before.
        let k = if y == top || y == bottom {
            placed.iter().filter(|p| **p == (x, y)).count()
        } else {
            0
        };
        placed.push((x, y));
        let c = color(o.color);
        chart.draw_series(std::iter::once(Cross::new(
            (x + 10.0 * k as f64 * px_x, y),
            6,
            c.stroke_width(2),
        )))?;
    }
    if let Some(name) = outliers_name(plot) {
        chart
            .draw_series(std::iter::empty::<Cross<(f64, f64), i32>>())?
            .label(name)
            .legend(|(x, y)| Cross::new((x + 10, y), 6, BLACK.stroke_width(2)));
    }
    for &(x, c) in &plot.lost {
        // Beside its cell's outliers: at the bottom edge when they all lie below the axis.
        let mine: Vec<&Outlier> = plot
            .outliers
            .iter()
            .filter(|o| o.x == x && o.color == c)
            .collect();
        let low = !mine.is_empty() && mine.iter().all(|o| o.y < bottom);
        let y = if low {
            bottom + 16.0 * px_y
        } else {
            top - 16.0 * px_y
        };
        chart.draw_series(std::iter::once(TriangleMarker::new(
            (x_pos(plot, x), y),
            8,
            color(c).filled(),
        )))?;
    }
    if let Some(name) = lost_name(plot) {
        chart
            .draw_series(std::iter::empty::<TriangleMarker<(f64, f64), i32>>())?
            .label(name)
            .legend(|(x, y)| TriangleMarker::new((x + 10, y), 7, BLACK.filled()));
    }
    Ok(())
}

/// Draw `plot` to `dir/stem.png` and `dir/stem.svg`. Returns the PNG's path, or `None` when the
/// plot has no points.
pub fn save_line_plot(dir: &Path, stem: &str, plot: &LinePlot) -> Result<Option<PathBuf>> {
    if plot.is_empty() {
        return Ok(None);
    }
    save_png_svg(
        dir,
        stem,
        |f| draw_lines(BitMapBackend::new(f, SIZE).into_drawing_area(), plot),
        |f| draw_lines(SVGBackend::new(f, SIZE).into_drawing_area(), plot),
    )
    .map(Some)
}

/// Draw one figure as `dir/stem.png` (with `png`) and `dir/stem.svg` (with `svg`), each whole or
/// not at all ([`draw_atomic`]); the PNG's path.
pub(super) fn save_png_svg<E1, E2>(
    dir: &Path,
    stem: &str,
    png: impl FnOnce(&Path) -> std::result::Result<(), E1>,
    svg: impl FnOnce(&Path) -> std::result::Result<(), E2>,
) -> Result<PathBuf>
where
    E1: std::error::Error + Send + Sync + 'static,
    E2: std::error::Error + Send + Sync + 'static,
{
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Io {
        file: dir.to_path_buf(),
        source: e,
    })?;
    let png_file = dir.join(format!("{stem}.png"));
    draw_atomic(&png_file, png)?;
    draw_atomic(&dir.join(format!("{stem}.svg")), svg)?;
    Ok(png_file)
}
