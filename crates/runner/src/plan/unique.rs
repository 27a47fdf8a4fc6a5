//! One trial per id: grid cells that differ only in keys their objective does not use plan the
//! same trial, which must train once and stand once in the frames.

use super::PlannedTrial;

/// Keep the first of trials with one id (cells that differ only in keys their objective does
/// not use, e.g. a grid over `soft_loss: [ce, dkd]` and `kd.dkd.nckd`, plan the ce trial once per
/// nckd value: the same trial), renumbered; a line per id planned more than once.
pub(super) fn one_trial_per_id(trials: &mut Vec<PlannedTrial>) -> Vec<String> {
    let mut cells: Vec<(String, Vec<String>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    trials.retain(|t| {
        let label = || {
            let s: Vec<String> = t.swept.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.join(" ")
        };
        if seen.insert(t.id.clone()) {
            cells.push((t.id.clone(), vec![label()]));
            return true;
        }
        if let Some((_, labels)) = cells.iter_mut().find(|(id, _)| *id == t.id) {
            labels.push(label());
        }
        false
    });
    for (i, t) in trials.iter_mut().enumerate() {
        t.index = i;
    }
    cells
        .into_iter()
        .filter(|(_, labels)| labels.len() > 1)
        .map(|(id, labels)| {
            format!(
                "{id}: planned by {} cells ({}), which differ only in keys its objective does not \
                 use; it trains once, reported under the first",
                labels.len(),
                labels.join("; ")
            )
        })
        .collect()
}
