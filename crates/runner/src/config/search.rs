//! `search:`: how a grid's KD cells are trained. `grid` (the default) trains every cell to the
//! end; `halving` is successive halving (Jamieson & Talwalkar 2016): every KD cell trains
//! `min_epochs`, the best `1 / eta` of each student model's cells (by validation accuracy, the
//! mean over seeds) continue from their checkpoints to `eta` times as many epochs, and so on;
//! the survivors train to the end. Never part of an id: a survivor is the very trial of the
//! full grid. The search itself is `run/halving.rs`.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Resolved};

/// `search:` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSearch {
    /// `grid` or `halving`.
    pub method: Option<String>,
    /// Halving: the share `1 / eta` of cells kept at each rung.
    pub eta: Option<usize>,
    /// Halving: the epochs every KD cell trains before the first cut.
    pub min_epochs: Option<usize>,
}

/// `search:` resolved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Search {
    /// Every cell trains to the end.
    #[default]
    Grid,
    /// Successive halving over each student model's KD cells.
    Halving { eta: usize, min_epochs: usize },
}

impl Search {
    pub fn is_grid(&self) -> bool {
        *self == Search::Grid
    }
}

/// The default `search.eta`: a third of the cells go on at each rung (ASHA's and Hyperband's
/// usual 3).
pub const DEFAULT_ETA: usize = 3;

impl RawSearch {
    pub(super) fn resolve(&self) -> Result<Search, ConfigError> {
        match self.method.as_deref().unwrap_or("grid") {
            "grid" => {
                for (key, set) in [
                    ("search.eta", self.eta.is_some()),
                    ("search.min_epochs", self.min_epochs.is_some()),
                ] {
                    if set {
                        return Err(invalid(key, "only with search.method: halving"));
                    }
                }
                Ok(Search::Grid)
            }
            "halving" => {
                let eta = self.eta.unwrap_or(DEFAULT_ETA);
                if eta < 2 {
                    return Err(invalid(
                        "search.eta",
                        format!("must be at least 2 (keep 1 / eta of the cells), got {eta}"),
                    ));
                }
                let Some(min_epochs) = self.min_epochs.filter(|&r| r > 0) else {
                    return Err(invalid(
                        "search.min_epochs",
                        "required with search.method: halving, and > 0: the epochs every KD \
                         cell trains before the first cut (e.g. a ninth of student.train.epochs \
                         with eta 3)",
                    ));
                };
                Ok(Search::Halving { eta, min_epochs })
            }
            other => Err(invalid(
                "search.method",
                format!("unknown search `{other}` (known: grid, halving)"),
            )),
        }
    }
}

/// The epochs where `search` cuts a group of cells trained `epochs` epochs and validated every
/// `eval_every`: `min_epochs * eta^i` below `epochs`, each rounded up to a validated epoch.
pub fn rungs(search: Search, epochs: usize, eval_every: usize) -> Vec<u32> {
    let Search::Halving { eta, min_epochs } = search else {
        return vec![];
    };
    let every = eval_every.max(1);
    let mut out: Vec<u32> = Vec::new();
    let mut r = min_epochs;
    while r < epochs {
        let at = r.div_ceil(every) * every;
        if at < epochs && out.last().is_none_or(|&l| (l as usize) < at) {
            out.push(at as u32);
        }
        r = r.saturating_mul(eta);
    }
    out
}

/// What halving needs of the resolved config: a validation split to rank cells on, and a first
/// rung before the end of every cell's training.
pub(super) fn check(cfg: &Resolved) -> Result<(), ConfigError> {
    if cfg.search.is_grid() {
        return Ok(());
    }
    if cfg.dataset.val_size == 0 {
        return Err(invalid(
            "search.method",
            "halving ranks cells on validation accuracy, and dataset.val_size is 0: hold out a \
             validation split",
        ));
    }
    for cell in &cfg.cells {
        let t = &cell.student.train;
        if rungs(cfg.search, t.epochs, t.eval_every).is_empty() {
            return Err(invalid(
                "search.min_epochs",
                format!(
                    "the first rung must come before the end of training: student.train.epochs \
                     is {} (validated every {} epochs), so no cell would be cut",
                    t.epochs, t.eval_every
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_fall_on_validated_epochs_below_the_end() {
        let h = |eta, min_epochs| Search::Halving { eta, min_epochs };
        assert_eq!(rungs(h(3, 2), 30, 1), [2, 6, 18]);
        assert_eq!(rungs(h(3, 2), 18, 1), [2, 6]);
        assert_eq!(rungs(h(2, 3), 20, 5), [5, 10, 15]);
        assert_eq!(rungs(h(3, 1), 4, 2), [2]);
        assert_eq!(rungs(h(3, 5), 5, 1), Vec::<u32>::new());
        assert_eq!(rungs(Search::Grid, 30, 1), Vec::<u32>::new());
    }
}
