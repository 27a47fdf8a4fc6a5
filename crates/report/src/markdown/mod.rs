//! The Markdown of `report.md` and of the CLI's closing tables, read off the [`Analysis`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::analysis::{Analysis, Comparison};
use crate::record::{EpochRecord, Exec, Kind, Status, TrialRecord};

mod fidelity;

pub use fidelity::fidelity_section;

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}", 100.0 * v))
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v}"))
}

/// `mean ± sd`, or the mean alone when there is one value (no spread to show).
fn mean_sd((m, sd): (f64, Option<f64>), signed: bool) -> String {
    let m = if signed {
        format!("{m:+.2}")
    } else {
        format!("{m:.2}")
    };
    match sd {
        Some(sd) => format!("{m} ± {sd:.2}"),
        None => m,
    }
}

/// The per-trial table, as Markdown (also what the CLI prints).
pub fn trials_table(rows: &[TrialRecord]) -> String {
    let mut s = String::from(
        "| trial | kind | seed | model | params | T | alpha | beta | soft | status | train % | val % | test % | test errors | wall s |\n\
         |---|---|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
            r.trial_id,
            r.kind,
            r.seed,
            r.arch,
            r.hidden,
            r.params,
            num(r.temperature),
            num(r.alpha),
            num(r.beta),
            r.soft_loss.as_deref().unwrap_or("-"),
            r.status,
            pct(r.train_acc),
            pct(r.val_acc),
            pct(r.test_acc),
            r.test_errors.map_or("-".into(), |e| e.to_string()),
            r.wall_s
        );
    }
    s
}

/// A row of the comparison table; `collapsed`: its count of collapsed seeds, when the table
/// has that column.
fn comparison_row(label: &str, c: &Comparison, collapsed: Option<usize>) -> String {
    let ci = match c.ci {
        Some(h) => format!("[{:+.2}, {:+.2}]", c.gain.0 - h, c.gain.0 + h),
        None => "one seed: no spread, no interval".into(),
    };
    let collapsed = collapsed.map_or(String::new(), |n| format!(" {n} |"));
    format!(
        "| {label} | {} | {} | {} | {} | {ci} |{collapsed}",
        c.n,
        mean_sd(c.kd, false),
        mean_sd(c.baseline, false),
        mean_sd(c.gain, true)
    )
}

/// KD against its paired hard-target baseline, one row per cell: means and sample standard
/// deviations over seeds, and a 95% t-interval of the gain. When some seed collapsed
/// ([`crate::analysis::collapsed`]), a `collapsed` column counts them per cell and a note
/// says what it means; the numbers keep every seed.
pub fn comparison_table(a: &Analysis) -> String {
    let compared: Vec<_> = a
        .cells
        .iter()
        .filter_map(|c| c.comparison().map(|cmp| (c, cmp)))
        .collect();
    if compared.is_empty() {
        return "No KD trial has a finished baseline of the same seed to compare with.\n".into();
    }
    let any_collapsed = compared.iter().any(|(c, _)| c.collapsed_pairs() > 0);
    let mut s = String::from(
        "| cell | seeds | KD test % | baseline test % | gain (points) | 95% interval of the gain |",
    );
    s.push_str(if any_collapsed {
        " collapsed |\n|---|---:|---:|---:|---:|---|---:|\n"
    } else {
        "\n|---|---:|---:|---:|---:|---|\n"
    });
    for (cell, cmp) in &compared {
        let collapsed = any_collapsed.then(|| cell.collapsed_pairs());
        let _ = writeln!(s, "{}", comparison_row(&cell.label, cmp, collapsed));
    }
    if any_collapsed {
        let n: usize = compared.iter().map(|(c, _)| c.collapsed_pairs()).sum();
        let _ = writeln!(
            s,
            "\n`collapsed`: how many of the cell's `seeds` collapsed ({n} in all). {} They \
             count in every mean, gain and interval of this table and in the claims; the \
             figures draw them apart from their cell's mean and spread.",
            crate::analysis::COLLAPSED
        );
    }
    let alone = a.cells.len() - compared.len();
    if alone > 0 {
        let _ = writeln!(
            s,
            "\n{alone} KD cell(s) have no finished baseline to compare with (`baseline: false`, \
             or the baseline did not finish)."
        );
    }
    s
}

/// [`comparison_table`] of `rows` (what the CLI prints after a sweep).
pub fn kd_vs_baseline(rows: &[TrialRecord]) -> String {
    comparison_table(&Analysis::new(rows))
}

/// The best KD cell of each student, chosen on mean validation accuracy, with its test numbers
/// and those of its paired baselines.
pub fn best_cells_table(a: &Analysis) -> String {
    let best = a.best_cells();
    if best.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| student | best cell (by validation) | seeds | val % | KD test % | baseline test % |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    let pct_of = |v: Vec<f64>| {
        let v: Vec<f64> = v.iter().map(|x| 100.0 * x).collect();
        mean_sd(crate::stats::mean_std(&v), false)
    };
    for cell in best {
        let val = pct_of(cell.kd.iter().filter_map(|r| r.val_acc).collect());
        let test = pct_of(cell.kd.iter().filter_map(|r| r.test_acc).collect());
        let base: Vec<f64> = cell.baselines().iter().filter_map(|b| b.test_acc).collect();
        let base = if base.is_empty() {
            "-".into()
        } else {
            pct_of(base)
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {val} | {test} | {base} |",
            cell.student,
            cell.label,
            cell.kd.len()
        );
    }
    s
}

/// " Data: ..." — the split sizes the rows record.
fn data_sizes(rows: &[TrialRecord]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let mut s = format!(" Data: {}", first.dataset);
    if first.val_images > 0 {
        let _ = write!(s, ", validation split {} images", first.val_images);
    } else {
        s.push_str(", no validation split");
    }
    let _ = write!(s, ", test set {} images", first.test_images);
    let teacher = rows
        .iter()
        .find(|r| r.kind == Kind::Teacher)
        .map(|r| r.train_images);
    let student = rows
        .iter()
        .find(|r| r.kind != Kind::Teacher)
        .map(|r| (r.train_images, r.transfer_fraction));
    let classes = rows
        .iter()
        .find(|r| r.kind != Kind::Teacher)
        .and_then(|r| r.transfer_classes.as_deref())
        .map_or(String::new(), |c| {
            format!(" of classes {c} only (the others left out of their transfer set)")
        });
    match (student, teacher) {
        (Some((st, f)), Some(t)) if st != t => {
            let _ = write!(
                s,
                "; the students trained on {st} images{classes} (transfer_fraction {f}), a share \
                 of the teacher's {t}, with the teacher's logits on them as soft targets"
            );
        }
        (Some((st, _)), _) => {
            let _ = write!(s, "; every model trained on the same {st} images");
        }
        (None, Some(t)) => {
            let _ = write!(s, "; the teacher trained on {t} images");
        }
        (None, None) => {}
    }
    let _ = write!(s, "; data fingerprint `{}`.", first.data_fingerprint);
    let jittered: Vec<&TrialRecord> = rows.iter().filter(|r| r.jitter.is_some()).collect();
    if let Some(r) = jittered.first() {
        let online = jittered
            .iter()
            .any(|r| r.teacher_mode.as_deref() == Some("online"));
        let _ = write!(
            s,
            " Training images of {} trial(s) were shifted by up to {} pixels (`train.jitter`){}.",
            jittered.len(),
            r.jitter.unwrap_or(0),
            if online {
                "; their KD students took the teacher's logits on each shifted batch (online \
                 teacher, `teacher_mode: online`), not the cached logits of the unshifted images"
            } else {
                ""
            }
        );
    }
    let augmented: Vec<&TrialRecord> = rows.iter().filter(|r| r.augment.is_some()).collect();
    if let Some(r) = augmented.first() {
        let _ = write!(
            s,
            " Training images of {} trial(s) were augmented on the device ({}: `train.crop` pads \
             by that many black pixels and cuts a random window, `train.flip` mirrors half the \
             images), drawn from the seed, epoch and batch so a KD trial and its baseline see \
             the same images; KD students took the teacher's logits on each augmented batch \
             (online teacher).",
            augmented.len(),
            r.augment.as_deref().unwrap_or("")
        );
    }
    let bf16 = rows
        .iter()
        .filter(|r| r.precision.as_deref() == Some("bf16"))
        .count();
    if bf16 > 0 {
        let _ = write!(
            s,
            " {bf16} trial(s) trained in bfloat16 (`train.precision: bf16`): a bfloat16 copy of \
             the model ran the forward and backward passes and the evaluations, the optimiser \
             updated float32 master weights, and losses were computed in float32; the others \
             in float32."
        );
    }
    let benchmark = rows
        .iter()
        .filter(|r| r.cudnn_benchmark == Some(true))
        .count();
    if benchmark > 0 {
        let _ = write!(
            s,
            " {benchmark} trial(s) let cuDNN choose convolution algorithms by timing them \
             (`train.cudnn_benchmark`)."
        );
    }
    s
}

/// Where the trials ran, e.g. `cpu (avx512 kernels, 2 threads)` or `cuda (NVIDIA H200)`.
pub fn execution_of(r: &TrialRecord) -> String {
    if r.device.starts_with("cuda") {
        format!("cuda ({})", r.hardware)
    } else {
        format!(
            "{} ({} kernels, {} threads)",
            r.device, r.hardware, r.threads
        )
    }
}

/// " Ran on ...": the execution environments and the initialisation, which trial ids include.
fn execution(rows: &[TrialRecord]) -> String {
    let mut envs: Vec<(String, usize)> = Vec::new();
    for r in rows {
        let e = format!("{}, libtorch {}", execution_of(r), r.libtorch);
        match envs.iter_mut().find(|(x, _)| *x == e) {
            Some((_, n)) => *n += 1,
            None => envs.push((e, 1)),
        }
    }
    let mut s = match envs.as_slice() {
        [] => return String::new(),
        [(e, _)] => format!(" Every trial ran on {e}."),
        many => {
            let list: Vec<String> = many
                .iter()
                .map(|(e, n)| format!("{e}: {n} trials"))
                .collect();
            format!(
                " Trials ran on {}; a KD trial and its baseline always ran on the same kind of \
                 device with the same threads.",
                list.join("; ")
            )
        }
    };
    let mut inits: Vec<&str> = rows.iter().map(|r| r.init.as_str()).collect();
    inits.dedup();
    if inits == ["torch"] {
        s.push_str(
            " Weights and biases start as PyTorch's defaults (uniform with bound \
             1/sqrt(fan_in)).",
        );
    } else {
        let _ = write!(s, " Initialisation: {}.", inits.join(", "));
    }
    s
}

/// " Students were evaluated ...": which epochs of the student trials have validation
/// accuracies (`train.eval_every`) and which test accuracies (`train.test_every`), from the
/// epoch rows.
fn evaluation(rows: &[TrialRecord], epochs: &[EpochRecord]) -> String {
    // Per student trial: the epochs with a validation (or, without one, test) accuracy, the
    // number with a test accuracy, and its epoch count.
    let mut patterns: Vec<(Vec<u32>, u32)> = Vec::new();
    let mut tests: Vec<(usize, usize)> = Vec::new();
    let mut same = true;
    for r in rows
        .iter()
        .filter(|r| r.kind != Kind::Teacher && r.status == Status::Ok)
    {
        let mine: Vec<&EpochRecord> = epochs.iter().filter(|e| e.trial_id == r.trial_id).collect();
        let with = |f: &dyn Fn(&EpochRecord) -> bool| -> Vec<u32> {
            mine.iter().filter(|e| f(e)).map(|e| e.epoch).collect()
        };
        let tested = with(&|e| e.test_acc.is_some());
        let validated = with(&|e| e.val_acc.is_some());
        let evaluated = if validated.is_empty() {
            tested.clone()
        } else {
            validated
        };
        same &= evaluated == tested;
        tests.push((tested.len(), evaluated.len()));
        let p = (evaluated, mine.len() as u32);
        if !patterns.contains(&p) {
            patterns.push(p);
        }
    }
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    let when = match patterns.as_slice() {
        [] => return String::new(),
        [(ev, n)] if ev.len() as u32 == *n => "after every epoch".to_string(),
        _ => {
            let parts: Vec<String> = patterns
                .iter()
                .map(|(ev, n)| format!("after epochs {} of {n}", list(ev)))
                .collect();
            format!("{} (`train.eval_every`)", parts.join("; "))
        }
    };
    if same {
        let best = if when == "after every epoch" {
            ""
        } else {
            "; the best epoch is chosen among those"
        };
        return format!(" Students were evaluated on validation and test {when}{best}.");
    }
    let (lo, hi) = tests
        .iter()
        .fold((usize::MAX, 0), |(l, h), (t, _)| (l.min(*t), h.max(*t)));
    let mean = tests.iter().map(|(t, _)| *t as f64).sum::<f64>() / tests.len() as f64;
    let of = tests.iter().map(|(_, e)| *e).max().unwrap_or(0);
    let count = if lo == hi {
        format!("{lo}")
    } else {
        format!("{lo} to {hi} (mean {mean:.1})")
    };
    format!(
        " Students were evaluated on validation {when}, and on the test set only at the best \
         validation epoch (its weights kept and tested after training) and after the last \
         (`train.test_every: best`, or also every N epochs): {count} test evaluations per \
         student of up to {of} evaluated epochs, which give every test number reported (after \
         the last epoch, and after the best validation epoch); the test set chooses nothing."
    )
}

/// " N student trials trained packed ...", when any did.
fn packing(rows: &[TrialRecord]) -> String {
    let students = rows.iter().filter(|r| r.kind != Kind::Teacher).count();
    let packed = rows.iter().filter(|r| r.exec == Exec::Packed).count();
    match packed {
        0 => String::new(),
        n if n == students => " Every student trained packed: the students of one shape \
             and recipe as one model, weights stacked along a leading axis (batched matrix \
             products), each with its own initialisation, data order, temperature and weights, \
             as alone to float rounding."
            .into(),
        n => format!(
            " {n} of {students} student trials trained packed (students of one shape as one \
             model, as alone to float rounding); the others alone."
        ),
    }
}

fn policy(a: &Analysis, epochs: &[EpochRecord]) -> String {
    let any_student = a.rows.iter().any(|r| r.kind != Kind::Teacher);
    let choice = if a.has_validation {
        " Cells are chosen on validation accuracy, never on test accuracy."
    } else if !any_student {
        " No student trial has a result yet, so this report chooses no best cell."
    } else {
        " There is no validation split (`dataset.val_size: 0`), so this report chooses no best \
         cell and draws no figure that would need one."
    };
    format!(
        "Reporting policy: accuracies are on the test set at T = 1 after the **last epoch**; \
         `val %` is on the validation split held out of the training file.{choice} `train %` is \
         measured in evaluation mode after training, on the images the trial trained on. Gains \
         are KD minus the paired hard-target-only baseline (same student, seed, initialisation, \
         data order, device kind and threads), in accuracy points; the interval is a 95% \
         Student-t interval over seeds, and a cell with one seed shows no spread.{}{}{}{}\n\n",
        data_sizes(a.rows),
        execution(a.rows),
        packing(a.rows),
        evaluation(a.rows, epochs)
    )
}

/// The whole `report.md`: a pure function of the rows and the figures drawn from them.
pub fn render_report(
    name: &str,
    rows: &[TrialRecord],
    epochs: &[EpochRecord],
    figures: &[(String, PathBuf)],
    out: &Path,
) -> String {
    let a = Analysis::new(rows);
    let mut s = format!("# kd-sweep report: {name}\n\n");
    s.push_str(&policy(&a, epochs));
    s.push_str("## Distillation against the hard-target-only baseline\n\n");
    s.push_str(&comparison_table(&a));
    let best = best_cells_table(&a);
    if !best.is_empty() {
        s.push_str("\n## Best cell per student size\n\n");
        s.push_str(&best);
    }
    if !figures.is_empty() {
        s.push_str("\n## Figures\n\n");
        for (title, path) in figures {
            let rel = path.strip_prefix(out).unwrap_or(path);
            let svg = rel.with_extension("svg");
            let _ = writeln!(
                s,
                "### {title}\n\n![{title}]({}) ([SVG]({}))\n",
                rel.display(),
                svg.display()
            );
        }
    }
    s.push_str("\n## Trials\n\n");
    s.push_str(&trials_table(rows));
    let bad: Vec<_> = rows.iter().filter(|r| r.status != Status::Ok).collect();
    if !bad.is_empty() {
        s.push_str("\n## Trials that did not finish\n\n");
        for r in bad {
            let why = r
                .message
                .as_deref()
                .map_or(String::new(), |m| format!(": {m}"));
            let _ = writeln!(
                s,
                "- `{}` ({}, seed {}): {}{why}",
                r.trial_id, r.kind, r.seed, r.status
            );
        }
    }
    s
}

/// `## Trials kept aside`: trials OUT holds that its plan no longer lists (an earlier config's),
/// which this report leaves out; nothing when there are none.
pub fn unplanned_section(rows: &[TrialRecord]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "## Trials kept aside\n\n{} trial(s) in this folder are not in this config's plan (an \
         earlier grid or config planned them). They are not in this report or its frames; their \
         rows are kept in `unplanned/` (trials.parquet, epochs.parquet, confusion.parquet) and \
         come back if the plan lists them again.\n\n{}\n",
        rows.len(),
        trials_table(rows)
    )
}
