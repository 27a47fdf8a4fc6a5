//! A student trial: the data it trains on (shared by every trial one process runs) and the
//! training of one [`PlannedTrial`].

use kd_report::{EpochRecord, Exec, Kind};
use tch::{nn, Device, Tensor};

use crate::data::{Data, DataPlan, SplitTensors, Tensors};
use crate::error::TrainError;
use crate::plan::PlannedTrial;
use crate::run::checkpoint::{self, Checkpoints};
use crate::run::models::{self, ModelMeta, ModelsOut};
use crate::run::teacher::{Logits, TeacherFiles};
use crate::train::measure::Reference;
use crate::train::snapshot::{Durability, Keep, KeptModel, Rung, Snapshot};
use crate::train::{self, Member, Outcome, TrainData};

/// Everything student trials train on in one process: the splits on its device, the transfer
/// set (`dataset.transfer_fraction` of the training split) and the teacher's logits on it.
#[derive(Debug)]
pub struct TrialContext {
    val: SplitTensors,
    test: SplitTensors,
    /// The students' training images: on the device, the only rows of the training split
    /// there.
    transfer: SplitTensors,
    /// Teacher logits for every image the students train on.
    soft_targets: Tensor,
    /// Per temperature, the targets of an ensemble averaged in probability on those images
    /// (as pseudo-logits; empty for a teacher whose logits serve every T).
    tempered: Vec<(f64, Tensor)>,
    /// Teacher logits on the test split, on the device.
    teacher_test: Tensor,
    /// Classes with no image in the transfer set (the bias shift raises their logits).
    missing: Vec<usize>,
    /// Where the teacher's weights are, for students with augmented images (online teacher).
    teacher: Option<TeacherFiles>,
    online: std::cell::OnceCell<Result<(nn::VarStore, kd_model_zoo::Net), String>>,
    input: kd_model_zoo::InputShape,
    classes: usize,
    device: Device,
    /// The device as the sweep names it (`cuda:1`), for the kept models' metadata: a worker
    /// uses its one visible GPU as `cuda:0`.
    device_name: String,
    /// Where and how often units checkpoint; none: never.
    checkpoints: Option<Checkpoints>,
    /// Where and which students' weights are kept; none: nowhere.
    models: Option<ModelsOut>,
    /// The planned data and its standardisation (per channel mean and std), for the kept
    /// models' metadata.
    data: (DataPlan, Vec<f64>, Vec<f64>),
    /// Warnings about checkpoints, for the caller to show ([`TrialContext::take_notes`]).
    notes: std::cell::RefCell<Vec<String>>,
}

/// A unit that stopped on request (a signal) before its end, its checkpoint written.
#[derive(Debug)]
pub struct Stopped(pub String);

/// How a unit's run ended: every member's outcome, or each member's state at a rung of
/// successive halving (its checkpoint written; see [`crate::train::snapshot::Rung`]): its
/// epochs so far, `val_acc` its last epoch's, no test numbers.
#[derive(Debug)]
pub enum UnitEnd {
    Finished(Vec<Outcome>),
    Paused(Vec<Outcome>),
}

impl TrialContext {
    /// The context on `device`: `data` with its planned transfer rows, `logits` (the
    /// teacher's, on the whole training and test splits) and where the teacher's weights are
    /// (for an online teacher). The transfer rows and their logits are picked on the host and
    /// only they go to the device (a worker's students never see the other training images),
    /// with the validation and test splits.
    pub fn new(
        data: &Data,
        logits: &Logits,
        teacher: Option<&TeacherFiles>,
        device: Device,
    ) -> TrialContext {
        let host = Tensors::new(data, Device::Cpu);
        let (transfer, soft) = host.transfer(&data.transfer, Some(&logits.train));
        let to = |s: &SplitTensors| SplitTensors {
            x: s.x.to_device(device),
            y: s.y.to_device(device),
        };
        let splits = Tensors {
            train: to(&transfer),
            val: to(&host.val),
            test: to(&host.test),
        };
        let soft = soft.map(|t| t.to_device(device));
        TrialContext::assemble(splits, soft, data, logits, teacher)
    }

    /// [`TrialContext::new`] with the splits already on the device (the teacher's, in the
    /// sweep's own process); the rest of the training split is let go.
    pub fn with_splits(
        splits: Tensors,
        data: &Data,
        logits: &Logits,
        teacher: Option<&TeacherFiles>,
    ) -> TrialContext {
        let (transfer, soft) = splits.transfer(&data.transfer, Some(&logits.train));
        let splits = Tensors {
            train: transfer,
            ..splits
        };
        TrialContext::assemble(splits, soft, data, logits, teacher)
    }

    /// The context of the transfer set (`splits.train`) and its teacher logits.
    fn assemble(
        splits: Tensors,
        soft: Option<Tensor>,
        data: &Data,
        logits: &Logits,
        teacher: Option<&TeacherFiles>,
    ) -> TrialContext {
        let device = splits.train.x.device();
        let tempered = logits
            .tempered
            .iter()
            .map(|(t, l)| (*t, crate::data::transfer_rows(l, &data.transfer, device)))
            .collect();
        TrialContext {
            val: splits.val,
            test: splits.test,
            transfer: splits.train,
            soft_targets: soft.expect("logits were given"),
            tempered,
            teacher_test: logits.test.to_device(device),
            missing: data.plan.missing_classes.clone(),
            teacher: teacher.cloned(),
            online: std::cell::OnceCell::new(),
            input: data.plan.input,
            classes: data.plan.classes,
            device_name: crate::env::device_label(device),
            device,
            checkpoints: None,
            models: None,
            data: (
                data.plan.clone(),
                data.dataset.mean.clone(),
                data.dataset.std.clone(),
            ),
            notes: Default::default(),
        }
    }

    /// Keep the students' weights as `m` says.
    pub fn with_models(self, m: Option<ModelsOut>) -> TrialContext {
        TrialContext { models: m, ..self }
    }

    /// Name the device as the sweep does (a worker's GPU is `cuda:0` inside it).
    pub fn with_device_name(self, name: Option<String>) -> TrialContext {
        match name {
            Some(device_name) => TrialContext {
                device_name,
                ..self
            },
            None => self,
        }
    }

    /// Checkpoint the units this context trains as `c` says, and continue from theirs.
    pub fn with_checkpoints(self, c: Option<Checkpoints>) -> TrialContext {
        TrialContext {
            checkpoints: c,
            ..self
        }
    }

    /// The warnings about checkpoints since the last call.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut self.notes.borrow_mut())
    }

    /// The soft targets KD trial `t` reads: those of its temperature where they depend on it
    /// (none when the teacher's files hold no targets at its T: never the T = 1 ones instead).
    fn soft_for(&self, t: &PlannedTrial) -> Result<&Tensor, String> {
        if self.tempered.is_empty() {
            return Ok(&self.soft_targets);
        }
        let temp = t.weights.temperature;
        self.tempered
            .iter()
            .find(|(x, _)| *x == temp)
            .map(|(_, s)| s)
            .ok_or_else(|| format!("the ensemble's cached targets hold none at T = {temp}"))
    }

    fn reference(&self) -> Reference<'_> {
        Reference {
            teacher_test: Some(&self.teacher_test),
            missing: &self.missing,
            classes: self.classes,
        }
    }

    /// The teacher's network on this device, loaded once, for students with augmented images.
    fn online_teacher(&self) -> Result<&kd_model_zoo::Net, String> {
        self.online
            .get_or_init(|| match &self.teacher {
                Some(files) => files
                    .load_net(self.input, self.classes, self.device)
                    .map_err(|e| e.to_string()),
                None => Err("the teacher's weights are not available to this worker".into()),
            })
            .as_ref()
            .map(|(_, net)| net)
            .map_err(|e| format!("online teacher: {e}"))
    }

    /// Train one student trial: libtorch seeded with the trial's seed, a fresh model, then
    /// [`train::train`] with the teacher's logits when it is a KD trial. Errors become a
    /// `failed` outcome with the reason. No checkpoints.
    pub fn run(&self, trial: &PlannedTrial, on_epoch: impl FnMut(&EpochRecord)) -> Outcome {
        self.train_single(trial, Durability::none(), on_epoch)
            .unwrap_or_else(|e| Outcome::failed(e.to_string()))
    }

    /// [`TrialContext::run`] with `durable`'s checkpoints; the errors that are not a failed
    /// outcome (a stop, a snapshot that does not fit) are the caller's.
    fn train_single(
        &self,
        trial: &PlannedTrial,
        durable: Durability,
        on_epoch: impl FnMut(&EpochRecord),
    ) -> Result<Outcome, TrainError> {
        let kd = trial.kind == Kind::Kd;
        // The online teacher is loaded (once per process: its build draws from libtorch's
        // generator) before the student's seed, so a student's dropout masks never depend on
        // whether its process had loaded the teacher before it.
        let online = if kd && trial.student.train.augments() {
            match self.online_teacher() {
                Ok(net) => Some(net),
                Err(e) => return Ok(Outcome::failed(e)),
            }
        } else {
            None
        };
        // Before the seed: it seeds libtorch itself (once per process).
        crate::train::snapshot::probe_draws();
        tch::manual_seed(trial.seed as i64);
        let vs = nn::VarStore::new(self.device);
        let net = match trial.student.model.build(&vs, self.input, self.classes) {
            Ok(net) => net,
            Err(e) => return Ok(Outcome::failed(format!("student.model.{e}"))),
        };
        let reference = self.reference();
        train::train(
            &net,
            &vs,
            &trial.student.train,
            &trial.weights,
            trial.seed,
            &TrainData {
                train: &self.transfer,
                val: &self.val,
                test: &self.test,
                soft_targets: match kd {
                    true => match self.soft_for(trial) {
                        Ok(s) => Some(s),
                        Err(e) => return Ok(Outcome::failed(e)),
                    },
                    false => None,
                },
                online_teacher: online,
                reference: Some(&reference),
            },
            &trial.id,
            durable,
            on_epoch,
        )
    }

    /// Train a pack of packed trials of one student config.
    fn train_pack(
        &self,
        trials: &[&PlannedTrial],
        durable: Durability,
        mut on_epoch: impl FnMut(usize, &EpochRecord),
    ) -> Result<Vec<Outcome>, TrainError> {
        let Some(first) = trials.first() else {
            return Ok(vec![]);
        };
        let members: Vec<Member> = trials
            .iter()
            .map(|t| Member {
                trial_id: t.id.clone(),
                seed: t.seed,
                weights: t.weights,
                kd: t.kind == Kind::Kd,
            })
            .collect();
        let reference = self.reference();
        // A pack's KD students share a temperature where the targets depend on it
        // (`Plan::units`).
        let soft = match trials.iter().find(|t| t.kind == Kind::Kd) {
            None => &self.soft_targets,
            Some(t) => match self.soft_for(t) {
                Ok(s) => s,
                Err(e) => return Ok(trials.iter().map(|_| Outcome::failed(e.clone())).collect()),
            },
        };
        let data = TrainData {
            train: &self.transfer,
            val: &self.val,
            test: &self.test,
            soft_targets: Some(soft),
            online_teacher: None,
            reference: Some(&reference),
        };
        train::train_pack(
            &first.student.model,
            &members,
            &first.student.train,
            &data,
            self.input,
            self.classes,
            durable,
            |k, log| on_epoch(k, log),
        )
    }

    /// Train a unit of the plan ([`crate::plan::Plan::units`]): one single trial, or a pack of
    /// packed trials of one student config. `on_epoch` sees each trial's epochs under its plan
    /// index; the outcomes come back in the order of `trials`. A pack that cannot run fails
    /// every member with the reason. With checkpoints, the unit continues from its checkpoint
    /// (one that cannot be used is set aside and the unit starts over) and writes one as
    /// `checkpoint_every` says; a stop asked for (a signal) writes one at once and returns
    /// [`Stopped`].
    pub fn run_unit(
        &self,
        trials: &[&PlannedTrial],
        on_epoch: impl FnMut(usize, &EpochRecord),
    ) -> Result<Vec<Outcome>, Stopped> {
        match self.run_unit_to(trials, &Rung::default(), on_epoch)? {
            UnitEnd::Finished(outcomes) | UnitEnd::Paused(outcomes) => Ok(outcomes),
        }
    }

    /// [`TrialContext::run_unit`] as successive halving runs it: pausing at `rung.until` (its
    /// checkpoint written) and with the members `rung.pruned` retired.
    pub fn run_unit_to(
        &self,
        trials: &[&PlannedTrial],
        rung: &Rung,
        mut on_epoch: impl FnMut(usize, &EpochRecord),
    ) -> Result<UnitEnd, Stopped> {
        let ids: Vec<&str> = trials.iter().map(|t| t.id.as_str()).collect();
        let file = self
            .checkpoints
            .as_ref()
            .map(|c| checkpoint::unit_file(&c.dir, &ids));
        let file = file.as_deref();
        let (meta, resume) = match file.map(|f| (f, checkpoint::load(f, &ids, self.device))) {
            Some((_, Ok(Some((meta, snap))))) => {
                if let Some(note) = checkpoint::other_cpu_note(&ids.join(", "), &meta) {
                    self.note(note);
                }
                (Some(meta), Some(snap))
            }
            Some((f, Err(why))) => {
                self.note(checkpoint::refuse(f, &why));
                (None, None)
            }
            _ => (None, None),
        };
        let mut attempt = |resume: Option<Snapshot>| {
            let mut durable = self.durability(file, &ids, resume);
            durable.rung = rung.clone();
            durable.models = self.keep(trials);
            match trials {
                [t] if t.exec == Exec::Single => {
                    let index = t.index;
                    self.train_single(t, durable, |log| on_epoch(index, log))
                        .map(|o| vec![o])
                }
                _ => self.train_pack(trials, durable, |k, log| on_epoch(trials[k].index, log)),
            }
        };
        let mut result = attempt(resume);
        if let (Some(f), Err(TrainError::Resume(why))) = (file, &result) {
            self.note(checkpoint::refuse(f, why));
            result = attempt(None);
        }
        match result {
            Ok(mut outcomes) => {
                for o in &mut outcomes {
                    if let (Some(note), Some(meta)) = (&o.resumed, &meta) {
                        o.resumed = Some(checkpoint::resumed_note(note, meta));
                    }
                }
                Ok(UnitEnd::Finished(outcomes))
            }
            Err(TrainError::Stopped(at)) => Err(Stopped(at)),
            Err(TrainError::Paused(members)) => Ok(UnitEnd::Paused(
                members
                    .into_iter()
                    .map(|m| {
                        let mut o = Outcome::empty(m.status);
                        o.val_acc = m.epochs.last().and_then(|e| e.val_acc);
                        o.wall_s = m.epochs.iter().map(|e| e.seconds).sum();
                        o.epochs = m.epochs;
                        o.message = m.message;
                        o
                    })
                    .collect(),
            )),
            Err(e) => Ok(UnitEnd::Finished(
                trials
                    .iter()
                    .map(|_| Outcome::failed(e.to_string()))
                    .collect(),
            )),
        }
    }

    /// What a unit of trials `ids` does about checkpoints: write them to `file` (none: no
    /// checkpoints, and no stop inside a unit), continue from `resume`.
    fn durability<'a>(
        &'a self,
        file: Option<&'a std::path::Path>,
        ids: &'a [&'a str],
        resume: Option<Snapshot>,
    ) -> Durability<'a> {
        let every = self.checkpoints.as_ref().and_then(|c| c.every);
        Durability {
            resume,
            every: file.and(every),
            stop: Box::new(move || file.is_some() && crate::run::stop::requested()),
            save: Box::new(move |snap| {
                let Some(f) = file else { return false };
                checkpoint::save_or_warn(f, ids, snap, |w| self.note(w))
            }),
            rung: Default::default(),
            models: Default::default(),
        }
    }

    /// Where the finished students of `trials` (a unit, in order) go, as `save:` says.
    fn keep<'a>(&'a self, trials: &'a [&'a PlannedTrial]) -> Keep<'a> {
        let Some(m) = &self.models else {
            return Keep::default();
        };
        Keep {
            save: m.save,
            sink: Box::new(move |i, model| match model {
                Ok(model) => self.write_model(m, trials[i], &model),
                Err(why) => {
                    self.note(format!(
                        "warning: student {} was not kept: {why}",
                        trials[i].id
                    ));
                    None
                }
            }),
        }
    }

    /// Write `model`, trial `t`'s weights; its path relative to OUT, or none (with a warning)
    /// when it could not be written.
    fn write_model(&self, m: &ModelsOut, t: &PlannedTrial, model: &KeptModel) -> Option<String> {
        let (plan, mean, std) = &self.data;
        let meta = ModelMeta {
            format: models::FORMAT.into(),
            trial_id: t.id.clone(),
            model: t.student.model.clone(),
            input: [self.input.channels, self.input.height, self.input.width],
            classes: self.classes,
            mean: mean.clone(),
            std: std.clone(),
            data: plan.clone(),
            precision: t.student.train.precision,
            exec: t.exec,
            device: self.device_name.clone(),
            threads: tch::get_num_threads().max(1) as usize,
            weights: model.which,
            epoch: model.epoch,
            test_acc: model.test.map(|(a, _)| a),
            test_errors: model.test.and_then(|(_, e)| e),
        };
        models::write_kept(m, &meta, model)
            .map_err(|e| self.note(format!("warning: student {} was not kept: {e}", t.id)))
            .ok()
    }

    fn note(&self, note: String) {
        self.notes.borrow_mut().push(note);
    }
}
