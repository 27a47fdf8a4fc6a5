//! The report's reporting-policy paragraph: what the numbers are, the data, where the trials
//! ran (execution class, CPU model), how they were evaluated and packed.

use std::fmt::Write as _;

use crate::analysis::Analysis;
use crate::record::{EpochRecord, Exec, Kind, Status, TrialRecord};

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

/// " CPU: ...": the CPU model that finished the trials (not part of their ids), and, where
/// they ran on more than one, which trials each finished.
fn cpu_models(rows: &[TrialRecord]) -> String {
    let mut models: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in rows {
        let model = r.cpu.as_deref().unwrap_or("not recorded");
        match models.iter_mut().find(|(m, _)| *m == model) {
            Some((_, ids)) => ids.push(&r.trial_id),
            None => models.push((model, vec![&r.trial_id])),
        }
    }
    match models.as_slice() {
        [] | [("not recorded", _)] => String::new(),
        [(model, _)] => format!(" CPU: {model}."),
        many => {
            let list: Vec<String> = many
                .iter()
                .map(|(m, ids)| format!("{m}: {}", ids.join(", ")))
                .collect();
            format!(
                " **The trials ran on {} CPU models** (one execution class, so the same ids; a \
                 seed on another CPU model is another draw of the same recipe, whose last \
                 digits may differ): {}.",
                many.len(),
                list.join("; ")
            )
        }
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
    s.push_str(&cpu_models(rows));
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

/// " The weights of N students are kept ...", when any are (`save:`).
fn kept(rows: &[TrialRecord]) -> String {
    let finished = rows
        .iter()
        .filter(|r| r.kind != Kind::Teacher && r.status == crate::Status::Ok)
        .count();
    match rows.iter().filter(|r| r.model_file.is_some()).count() {
        0 => String::new(),
        n => format!(
            " The weights of {n} of the {finished} finished students are kept in `models/` \
             (`<trial id>.safetensors`, the epoch each record's numbers measure: see \
             docs/students.md); `kd eval models/<trial id>.safetensors` evaluates one again."
        ),
    }
}

pub(super) fn policy(a: &Analysis, epochs: &[EpochRecord]) -> String {
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
         Student-t interval over seeds, and a cell with one seed shows no spread.{}{}{}{}{}\n\n",
        data_sizes(a.rows),
        execution(a.rows),
        packing(a.rows),
        evaluation(a.rows, epochs),
        kept(a.rows)
    )
}
