//! `OUT/plan.json`: which config and which trial ids one OUT folder holds.

use std::path::Path;

use kd_report::store::{self, PlanFile};

use crate::config::Resolved;
use crate::error::RunError;
use crate::plan::Plan;
use crate::plan::Shard;

/// `OUT/plan.json` for `plan`, and a note when it replaces another. One OUT holds one config:
/// a sweep of another config (another `name:`) is refused, and so is a shard of an edited
/// config or one that plans other ids for the same config (other hardware, threads or
/// libtorch), unless `replan`. A whole sweep of an edited config replans OUT (it holds OUT
/// alone); the rows of trials it no longer plans are kept in `OUT/unplanned/`.
pub(super) fn plan_file(
    cfg: &Resolved,
    plan: &Plan,
    out: &Path,
    shard: Option<Shard>,
    replan: bool,
) -> Result<(PlanFile, Option<String>), RunError> {
    let planned_on: Vec<String> = plan.classes.iter().map(|c| c.describe()).collect();
    let index = PlanFile {
        name: plan.name.clone(),
        // `search` decides which trials train how far, never what a trial is: a grid run may
        // follow a halving one in the same folder (its shards too); `save` what is kept.
        config_digest: crate::plan::content_hash(&crate::config::Resolved {
            search: Default::default(),
            save: Default::default(),
            ..cfg.clone()
        }),
        planned_on: planned_on.join(", "),
        ids: std::iter::once(plan.teacher.id.clone())
            .chain(plan.teacher.members.iter().map(|m| m.id.clone()))
            .chain(plan.trials.iter().map(|t| t.id.clone()))
            .collect(),
    };
    let path = out.join("plan.json");
    let earlier = match store::read_plan(out) {
        Ok(Some(earlier)) if earlier != index => earlier,
        _ => {
            store::write_plan(out, &index)?;
            return Ok((index, None));
        }
    };
    let what = match shard {
        Some(s) => format!("shard {s}"),
        None => "this sweep".into(),
    };
    let refuse = |why: String| {
        RunError::PlanMismatch(format!(
            "{}: {why}. Give this config its own folder (--out), or pass --replan to replace \
             the plan (the rows of trials it no longer plans are kept in {}, never deleted)",
            path.display(),
            store::unplanned_dir(out).display()
        ))
    };
    if !replan {
        if earlier.name != index.name {
            return Err(refuse(format!(
                "this folder holds the plan of config `{}` (digest {}); {what} is config `{}` \
                 (digest {})",
                earlier.name,
                short(&earlier.config_digest),
                index.name,
                short(&index.config_digest)
            )));
        }
        if let Some(shard) = shard {
            if earlier.config_digest != index.config_digest {
                return Err(refuse(format!(
                    "shard {shard} is of an edited config (digest {}), not the one the plan in \
                     this folder was made from (digest {}); shards of one sweep must share one \
                     config (and --set values)",
                    short(&index.config_digest),
                    short(&earlier.config_digest)
                )));
            }
            if earlier.ids != index.ids {
                return Err(refuse(format!(
                    "shard {shard} plans other trial ids than the shards before it in this \
                     folder (they planned on {}, this one on {}). The shards of one sweep must \
                     run on like machines (CPU class or GPU model, threads, libtorch): give the \
                     Slurm job one partition of like nodes",
                    earlier.planned_on, index.planned_on
                )));
            }
        }
    }
    let note = (earlier.ids != index.ids).then(|| {
        let gone = earlier
            .ids
            .iter()
            .filter(|id| !index.ids.contains(id))
            .count();
        format!(
            "{} replaces the plan in {} (config digest {} -> {}): {gone} trial(s) it planned \
             are not in this plan; their rows are kept in {}",
            what,
            path.display(),
            short(&earlier.config_digest),
            short(&index.config_digest),
            store::unplanned_dir(out).display()
        )
    });
    store::write_plan(out, &index)?;
    Ok((index, note))
}

/// The first 12 hex digits of a digest, as ids show them.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}
