//! Heat maps (the gain over alpha x T, confusion matrices), to PNG and SVG, each written
//! atomically.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::draw::{save_png_svg, SIZE};
use crate::Result;

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
    save_png_svg(
        dir,
        stem,
        |f| draw_heat(BitMapBackend::new(f, SIZE).into_drawing_area(), h),
        |f| draw_heat(SVGBackend::new(f, SIZE).into_drawing_area(), h),
    )
}
