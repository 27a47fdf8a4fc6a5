//! What a sweep prints about its units: their progress labels, the note of one stopped on
//! request, and lists that say a run of equal items once.

use crate::plan::PlannedTrial;

/// `items` joined by commas, a run of equal ones said once with its count (`cpu (1 threads) x3`),
/// so a header line stays short however many workers there are.
pub(super) fn grouped(items: impl Iterator<Item = String>) -> String {
    let mut runs: Vec<(String, usize)> = Vec::new();
    for item in items {
        match runs.last_mut() {
            Some((last, n)) if *last == item => *n += 1,
            _ => runs.push((item, 1)),
        }
    }
    runs.iter()
        .map(|(item, n)| match n {
            1 => item.clone(),
            n => format!("{item} x{n}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the sweep says of a unit of `trials` that stopped on request `at` where.
pub(super) fn stopped_note(trials: &[&PlannedTrial], at: &str) -> String {
    format!(
        "{} stopped {at}; the same command continues it from its last checkpoint",
        label(trials)
    )
}

/// The progress label of a unit: `kd seed 0`, or `pack of 18 800-800`.
pub(super) fn label(unit: &[&PlannedTrial]) -> String {
    match unit {
        [t] if t.exec == kd_report::Exec::Single => format!("{} seed {}", t.kind, t.seed),
        _ => format!(
            "pack of {} {}",
            unit.len(),
            unit.first()
                .map_or(String::new(), |t| t.student.model.shape_label())
        ),
    }
}
