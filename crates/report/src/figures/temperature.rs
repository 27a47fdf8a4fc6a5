//! The figures over temperature: a line per cell family (mean ± std over the seeds that did not
//! collapse), its collapsed seeds drawn apart, the band of its paired baselines and, for the
//! test error, the teacher's as a reference line.

use crate::analysis::{collapsed, ok, student_label, Analysis, Cell, Family};
use crate::record::{Kind, TrialRecord};

use super::{err_pct, point, Band, LinePlot, Outlier, RefLine, Series};

/// `metric` of each KD cell family against temperature (a line per family, mean ± std over the
/// seeds that did not [`collapsed`]; the others as outliers, and a cell with none left as a
/// mark at the top edge) with the family's own paired baselines as a band. Families that share
/// their baselines (an alpha sweep) share one band. `title_apart` is the title when some seed
/// is drawn apart.
pub(super) fn versus_temperature(
    families: &[Family],
    metric: fn(&TrialRecord) -> f64,
    (title, title_apart): (&str, &str),
    y_label: &str,
    y_limits: (f64, f64),
) -> LinePlot {
    let mut series = Vec::new();
    let mut outliers = Vec::new();
    let mut lost = Vec::new();
    // (baseline ids, student, family label, band)
    let mut bands: Vec<(Vec<&str>, &str, &str, Band)> = Vec::new();
    for (i, f) in families.iter().enumerate() {
        let mut cells: Vec<&&Cell> = f.cells.iter().collect();
        cells.sort_by(|a, b| {
            a.temperature()
                .unwrap_or(0.0)
                .total_cmp(&b.temperature().unwrap_or(0.0))
        });
        let mut points = Vec::new();
        for (c, t) in cells.iter().filter_map(|c| Some((c, c.temperature()?))) {
            let healthy = c.healthy();
            if healthy.is_empty() {
                lost.push((t, i));
            } else {
                points.push(point(t, &healthy, metric));
            }
            outliers.extend(c.collapsed().iter().map(|r| Outlier {
                x: t,
                y: metric(r),
                color: i,
            }));
        }
        series.push(Series {
            name: format!("KD {}", f.label),
            points,
            dashed: false,
            color: i,
        });
        let base = f.baselines();
        let mut ids: Vec<&str> = base.iter().map(|b| b.trial_id.as_str()).collect();
        ids.sort_unstable();
        let healthy: Vec<&TrialRecord> = base
            .iter()
            .copied()
            .filter(|b| !collapsed(b, None))
            .collect();
        if healthy.is_empty() || bands.iter().any(|(other, ..)| *other == ids) {
            continue;
        }
        let (_, mid, half) = point(0.0, &healthy, metric);
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
    let apart = !outliers.is_empty() || !lost.is_empty();
    LinePlot {
        title: if apart { title_apart } else { title }.to_string(),
        x_label: "temperature T (log scale)".into(),
        y_label: y_label.into(),
        log_x: true,
        series,
        bands,
        y_limits: Some(y_limits),
        refs: vec![],
        outliers,
        lost,
    }
}

/// The test error of each finished teacher the KD cells learned from (each once), as reference
/// lines.
pub(super) fn teacher_lines(a: &Analysis) -> Vec<RefLine> {
    let mut teachers: Vec<&TrialRecord> = Vec::new();
    for c in &a.cells {
        let id = c.first().teacher_id.as_deref();
        let found = a
            .rows
            .iter()
            .find(|r| Some(r.trial_id.as_str()) == id && r.kind == Kind::Teacher && ok(r));
        if let Some(t) = found.filter(|t| !teachers.iter().any(|o| o.trial_id == t.trial_id)) {
            teachers.push(t);
        }
    }
    teachers
        .into_iter()
        .map(|t| {
            let y = err_pct(t);
            RefLine {
                name: format!("teacher {} ({y:.2}% test error)", student_label(t)),
                y,
            }
        })
        .collect()
}
