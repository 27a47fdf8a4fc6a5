//! `--dry-run`'s text: the plan with its FLOPs and a time estimate.

use std::fmt::Write as _;

use kd_model_zoo::ModelSpec;
use kd_report::{Exec, Kind};

use super::Plan;

impl Plan {
    /// The plan as text, with the training FLOPs and a time estimate: what `--dry-run` prints.
    /// Every id is the one the run will write.
    pub fn describe(&self) -> String {
        let d = &self.data;
        // Training costs about 3x the forward FLOPs (forward + backward) per image and epoch.
        let cost = |spec: &ModelSpec, epochs: usize, images: usize| {
            3.0 * spec.flops_per_sample(d.input, d.classes) as f64 * images as f64 * epochs as f64
        };
        let t = &self.teacher;
        let mut s = format!(
            "data: {} in {} (fingerprint {}), {} train / {} val / {} test images; students \
             learn from {}\n",
            d.name.as_str(),
            d.dir.display(),
            d.fingerprint,
            d.train,
            d.val,
            d.test,
            d.transfer_rows
        );
        let teacher_flops = match t.ensemble {
            None => teacher_line(t, "teacher", &cost, d.train, &mut s),
            Some(_) => self.ensemble_lines(&cost, &mut s),
        };
        let total = teacher_flops + self.trial_lines(&mut s);
        self.notes(&mut s);
        self.pack_line(&mut s);
        let _ = writeln!(
            s,
            "{} student trials + teacher: {:.1} TFLOP, about {:.0} min on 2 CPU cores at the \
             ~100 GFLOP/s measured here",
            self.trials.len(),
            total / 1e12,
            total / 100e9 / 60.0
        );
        s
    }
}

/// The line of lone teacher `t` (`what`: `teacher` or `member`) into `s`; its training FLOPs.
fn teacher_line(
    t: &super::TeacherPlan,
    what: &str,
    cost: &dyn Fn(&ModelSpec, usize, usize) -> f64,
    train: usize,
    s: &mut String,
) -> f64 {
    let loaded = t.cfg.checkpoint.is_some() || t.torchscript.is_some();
    let flops = if loaded {
        0.0
    } else {
        cost(&t.cfg.model, t.cfg.train.epochs, train)
    };
    let (arch, shape) = match &t.torchscript {
        Some(s) => ("torchscript".to_string(), s.file.display().to_string()),
        None => (t.cfg.model.arch().to_string(), t.cfg.model.shape_label()),
    };
    let _ = writeln!(
        s,
        "{} {what} {arch} {shape} seed {} on {} ({}): {:.1} TFLOP{}",
        t.id,
        t.cfg.seed,
        t.slot.device,
        t.slot.class.describe(),
        flops / 1e12,
        if t.torchscript.is_some() {
            " (torchscript, not trained here)"
        } else if loaded {
            " (checkpoint)"
        } else {
            " (0 if cached)"
        }
    );
    flops
}

impl Plan {
    /// An ensemble teacher's lines into `s`: its id and rule, a line per member, and the memory
    /// of combining them; the members' training FLOPs.
    fn ensemble_lines(
        &self,
        cost: &dyn Fn(&ModelSpec, usize, usize) -> f64,
        s: &mut String,
    ) -> f64 {
        let (t, d) = (&self.teacher, &self.data);
        let c = t.ensemble.as_ref().expect("an ensemble plan");
        let weights = match c.weights.first() {
            Some(w) if c.weights.iter().all(|x| x == w) => "equal weights".to_string(),
            _ => {
                let w: Vec<String> = c.weights.iter().map(|w| format!("{w:.3}")).collect();
                format!("weights {}", w.join(" "))
            }
        };
        let _ = writeln!(
            s,
            "{} teacher ensemble {} ({} rule, {weights}): its members below, each trained or \
             reused by its own id",
            t.id,
            t.ensemble_label(),
            c.rule,
        );
        let flops = t
            .members
            .iter()
            .map(|m| teacher_line(m, "member", cost, d.train, s))
            .sum();
        // float32 logits: every member's on the training, validation and test splits while
        // they combine; then the students' targets (one tensor per temperature under the
        // arithmetic rule) and the test logits.
        let mb = |rows: usize| (rows * d.classes * 4) as f64 / 1e6;
        let split = mb(d.train) + mb(d.val) + mb(d.test);
        let targets = match c.rule {
            // The T = 1 prediction, then one per temperature.
            crate::config::ensemble::Rule::Arithmetic => 1 + self.temperatures().len(),
            crate::config::ensemble::Rule::Geometric => 1,
        };
        let _ = writeln!(
            s,
            "ensemble memory: the {} members' logits {:.1} MB while combining; the students' \
             targets {:.1} MB ({targets} training tensor(s) of {:.1} MB: under the arithmetic \
             rule one per temperature and one at T = 1) in the cache and in each student \
             process",
            t.members.len(),
            t.members.len() as f64 * split,
            targets as f64 * mb(d.train) + mb(d.test),
            mb(d.train)
        );
        flops
    }

    /// One line per student trial (its id, settings, class, execution and training FLOPs) into
    /// `s`; the trials' FLOPs in all.
    fn trial_lines(&self, s: &mut String) -> f64 {
        let d = &self.data;
        let t = &self.teacher;
        // Training costs about 3x the forward FLOPs (forward + backward) per image and epoch.
        let cost = |spec: &ModelSpec, epochs: usize, images: usize| {
            3.0 * spec.flops_per_sample(d.input, d.classes) as f64 * images as f64 * epochs as f64
        };
        let mut total = 0.0;
        // A KD student with augmented images runs the teacher forward on each batch (online):
        // its forward FLOPs per image and epoch (unknown for a TorchScript teacher, counted 0).
        let teacher_forward = match &t.torchscript {
            Some(_) => 0.0,
            None => t.cfg.model.flops_per_sample(d.input, d.classes) as f64,
        };
        for tr in &self.trials {
            let online = tr.kind == Kind::Kd && tr.student.train.augments();
            let f = cost(&tr.student.model, tr.student.train.epochs, d.transfer_rows)
                + if online {
                    teacher_forward * d.transfer_rows as f64 * tr.student.train.epochs as f64
                } else {
                    0.0
                };
            total += f;
            let w = &tr.weights;
            let kd = if tr.kind == Kind::Kd {
                format!(
                    " T={} alpha={} beta={} {}",
                    w.temperature,
                    w.alpha,
                    w.beta,
                    w.soft_loss.as_str()
                )
            } else {
                String::new()
            };
            let swept: Vec<String> = tr.swept.iter().map(|(k, v)| format!(" {k}={v}")).collect();
            let _ = writeln!(
                s,
                "{} {} {} seed {}{kd}{} [{}, {}{}]: {:.1} TFLOP{}",
                tr.id,
                tr.kind,
                tr.student.model.shape_label(),
                tr.seed,
                swept.concat(),
                self.classes[tr.class].describe(),
                tr.exec,
                numerics(&tr.student.train),
                f / 1e12,
                if online {
                    " (with the online teacher)"
                } else {
                    ""
                }
            );
        }
        total
    }

    /// The packs of the plan in one line (none when nothing is packed).
    fn pack_line(&self, s: &mut String) {
        let all: Vec<usize> = (0..self.trials.len()).collect();
        let units = self.units(&all);
        let packs: Vec<&Vec<usize>> = units
            .iter()
            .filter(|u| self.trials[u[0]].exec == Exec::Packed)
            .collect();
        if !packs.is_empty() {
            let sizes: Vec<String> = packs
                .iter()
                .map(|u| {
                    format!(
                        "{} x {}",
                        u.len(),
                        self.trials[u[0]].student.model.shape_label()
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "packed: {} trials in {} pack{} ({}); {} alone",
                packs.iter().map(|u| u.len()).sum::<usize>(),
                packs.len(),
                if packs.len() == 1 { "" } else { "s" },
                sizes.join(", "),
                units.len() - packs.len()
            );
        }
    }
}

impl Plan {
    /// What the trial lines do not say: each objective's recipe weights where cells take them,
    /// trials several cells plan, and `workers` beyond what can start.
    fn notes(&self, s: &mut String) {
        recipe_notes(s, &self.trials);
        for line in &self.merged {
            let _ = writeln!(s, "{line}");
        }
        if self.workers > self.slots.len() {
            let _ = writeln!(
                s,
                "workers: {} requested; at most {} start (one per student trial)",
                self.workers,
                self.slots.len()
            );
        }
    }
}

/// A line per objective whose KD cells train with its published recipe's weights (taken when
/// a config sets neither kd.alpha nor kd.beta), saying whose they are.
fn recipe_notes(s: &mut String, trials: &[crate::plan::PlannedTrial]) {
    let mut said = Vec::new();
    for w in trials
        .iter()
        .filter(|t| t.kind == Kind::Kd)
        .map(|t| &t.weights)
    {
        let o = w.soft_loss.objective();
        if o.recipe_weights() == Some((w.alpha, w.beta)) && !said.contains(&w.soft_loss) {
            said.push(w.soft_loss);
            let _ = writeln!(
                s,
                "{}: alpha {} beta {}, {} (the default without kd.alpha/kd.beta)",
                w.soft_loss.as_str(),
                w.alpha,
                w.beta,
                o.recipe()
            );
        }
    }
}

/// `, bf16` / `, cudnn benchmark` after a trial's execution when its recipe asks for them.
fn numerics(t: &crate::config::TrainCfg) -> String {
    let mut s = String::new();
    if !t.precision.is_fp32() {
        s.push_str(", ");
        s.push_str(&crate::config::enum_name(&t.precision));
    }
    if t.cudnn_benchmark {
        s.push_str(", cudnn benchmark");
    }
    s
}
