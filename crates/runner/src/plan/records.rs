//! The records of a plan's trials: everything the plan decides (ids, settings, pairing, data,
//! class) joined with how a trial ended and where it ran. Kept trials of an earlier run are
//! re-derived here too, so a record never carries a stale pairing or swept value.

use kd_model_zoo::ModelSpec;
use kd_report::{Exec, Kind, TrialRecord};

use crate::config::{enum_name, TrainCfg};
use crate::env::Slot;
use crate::plan::{Plan, PlannedTrial};
use crate::train::Outcome;

impl Plan {
    /// The record of the teacher, as `outcome` ended on `ran_on`.
    pub fn teacher_record(&self, outcome: &Outcome, ran_on: &Slot) -> TrialRecord {
        match self.teacher.ensemble {
            Some(_) => self.ensemble_record(outcome),
            None => self.teacher_record_of(&self.teacher, outcome, ran_on),
        }
    }

    /// The record of lone teacher `t` (the sweep's, or a member of its ensemble, which points
    /// to the ensemble by its `teacher_id`), as `outcome` ended on `ran_on`.
    pub fn teacher_record_of(
        &self,
        t: &super::TeacherPlan,
        outcome: &Outcome,
        ran_on: &Slot,
    ) -> TrialRecord {
        let mut r = self.record_of(
            (&t.id, Kind::Teacher, t.cfg.seed),
            (&t.cfg.model, &t.cfg.train),
            ran_on,
            outcome,
        );
        // A checkpoint teacher trained for no epochs here.
        if t.cfg.checkpoint.is_some() {
            r.epochs = 0;
        }
        // A TorchScript teacher is its file: no model spec or recipe of ours describes it.
        if let Some(s) = &t.torchscript {
            r.epochs = 0;
            r.arch = "torchscript".into();
            r.hidden = s
                .file
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            r.model = serde_json::json!({"torchscript": s.file, "sha256": s.digest}).to_string();
            r.init = "loaded".into();
            r.params = s.params;
        }
        r.transfer_fraction = 1.0;
        r.train_images = self.data.train as u64;
        if self.teacher.members.iter().any(|m| m.id == t.id) {
            r.teacher_id = Some(self.teacher.id.clone());
        }
        r
    }

    /// The record of student trial `t` as `outcome` ended on `ran_on` (the slot that ran it, or
    /// for a trial kept from an earlier run the device and threads it recorded).
    pub fn trial_record(&self, t: &PlannedTrial, outcome: &Outcome, ran_on: &Slot) -> TrialRecord {
        let mut r = self.record_of(
            (&t.id, t.kind, t.seed),
            (&t.student.model, &t.student.train),
            ran_on,
            outcome,
        );
        if t.kind == Kind::Kd {
            let w = &t.weights;
            r.temperature = Some(w.temperature);
            r.alpha = Some(w.alpha);
            r.beta = Some(w.beta);
            r.soft_loss = Some(w.soft_loss.as_str().into());
            r.t2_scaling = Some(w.t2_scaling);
            r.soft_reduction = Some(w.soft_reduction().into());
            r.teacher_mode = Some(
                if t.student.train.augments() {
                    "online"
                } else {
                    "cached"
                }
                .into(),
            );
        }
        let mut loss = t.weights.describe(t.kind == Kind::Kd);
        let eps = t.student.train.label_smoothing;
        if eps > 0.0 {
            // The hard term is label-smoothed (`train.label_smoothing`).
            loss = loss.replace("CE(y, q_1)", &format!("CE(y smoothed by {eps}, q_1)"));
        }
        r.loss = Some(loss);
        let d = &self.data;
        if !d.omit_classes.is_empty() || !d.keep_classes.is_empty() {
            let present: Vec<String> = (0..d.classes)
                .filter(|c| !d.missing_classes.contains(c))
                .map(|c| c.to_string())
                .collect();
            r.transfer_classes = Some(present.join(" "));
        }
        if !d.missing_classes.is_empty() {
            let m: Vec<String> = d.missing_classes.iter().map(|c| c.to_string()).collect();
            r.shifted_classes = Some(m.join(" "));
        }
        let m = &outcome.measures;
        r.teacher_agreement = m.teacher_agreement;
        r.teacher_kl = m.teacher_kl;
        r.bias_shift = m.bias_shift;
        r.shifted_test_errors = m.shifted_test_errors;
        r.teacher_id = t.teacher_id.clone();
        r.baseline_id = t.baseline_id.clone();
        r.swept = t.swept.clone();
        r.exec = t.exec;
        r
    }

    fn record_of(
        &self,
        (id, kind, seed): (&str, Kind, u64),
        (model, train): (&ModelSpec, &TrainCfg),
        ran_on: &Slot,
        o: &Outcome,
    ) -> TrialRecord {
        let d = &self.data;
        TrialRecord {
            trial_id: id.into(),
            kind,
            seed,
            status: o.status,
            arch: model.arch().into(),
            hidden: model.shape_label(),
            model: serde_json::to_string(model).expect("a model spec serialises"),
            // A TorchScript student starts from its file's weights, as a loaded teacher does.
            init: match model {
                kd_model_zoo::ModelSpec::Torchscript(_) => "loaded".into(),
                m => m.init().as_str().into(),
            },
            params: model.param_count(d.input, d.classes) as u64,
            epochs: train.epochs as u32,
            batch_size: train.batch_size as u32,
            optimizer: enum_name(&train.optimizer),
            lr: train.lr,
            momentum: train.momentum,
            weight_decay: train.weight_decay,
            schedule: train.schedule_label(),
            temperature: None,
            alpha: None,
            beta: None,
            soft_loss: None,
            t2_scaling: None,
            loss: None,
            soft_reduction: None,
            teacher_mode: None,
            teacher_id: None,
            baseline_id: None,
            dataset: d.name.as_str().into(),
            data_fingerprint: d.fingerprint.clone(),
            transfer_fraction: d.transfer_fraction,
            transfer_classes: None,
            jitter: Some(train.jitter as u32).filter(|&j| j > 0),
            augment: train
                .augment_label()
                .filter(|_| train.crop > 0 || train.flip),
            max_norm: train.max_norm,
            precision: (!train.precision.is_fp32()).then(|| enum_name(&train.precision)),
            cudnn_benchmark: train.cudnn_benchmark.then_some(true),
            train_images: d.transfer_rows as u64,
            val_images: d.val as u64,
            test_images: d.test as u64,
            device: ran_on.device.clone(),
            hardware: ran_on.class.hardware.clone(),
            threads: ran_on.threads as u32,
            cpu: o.cpu.clone(),
            model_file: o.model_file.clone(),
            exec: Exec::Single,
            libtorch: ran_on.class.libtorch.clone(),
            train_acc: o.train_acc,
            val_acc: o.val_acc,
            test_acc: o.test_acc,
            test_error: o.test_acc.map(|a| 1.0 - a),
            test_errors: o.test_errors,
            best_epoch: o.best_epoch,
            best_test_acc: o.best_test_acc(),
            teacher_agreement: None,
            teacher_kl: None,
            shifted_classes: None,
            bias_shift: None,
            shifted_test_errors: None,
            wall_s: o.wall_s,
            finished_at: o.finished_at.clone(),
            message: o.message.clone(),
            resumed: o.resumed.clone(),
            swept: vec![],
        }
    }
}
