//! Defaults (the only place they are written; a model's are in its family's file in the zoo,
//! the `kd:` block's in `kd.rs`) and the validation of every key.

use kd_data::DatasetName;
use kd_model_zoo::{ModelSpec, Role};

use super::checks::{check_classes, check_cudnn, check_name, check_prob, resolve_expect};
use super::device::resolve_device;
use super::{
    enum_name, invalid, parse_enum, ConfigError, DatasetCfg, Optimizer, Pack, Precision, RawConfig,
    RawModel, RawTrain, Resolved, Save, Schedule, StudentCfg, TrainCfg,
};

// ---------------------------------------------------------------------------------------------
// Defaults: the only place they are written.

pub const DEFAULT_VAL_SIZE: usize = 5000;
/// `schedule: multistep`'s factor when `train.gamma` is unset (RepDistiller's and
/// torchvision's 0.1).
pub const DEFAULT_GAMMA: f64 = 0.1;

fn default_epochs(role: Role) -> usize {
    match role {
        Role::Teacher => 20,
        Role::Student => 15,
    }
}

impl RawTrain {
    pub(super) fn resolve(&self, key: &str, role: Role) -> Result<TrainCfg, ConfigError> {
        let epochs = self.epochs.unwrap_or(default_epochs(role));
        if epochs == 0 {
            return Err(invalid(format!("{key}.epochs"), "must be > 0, got 0"));
        }
        let batch_size = self.batch_size.unwrap_or(128);
        if batch_size == 0 {
            return Err(invalid(format!("{key}.batch_size"), "must be > 0, got 0"));
        }
        let optimizer = match self.optimizer.as_deref() {
            None => Optimizer::Sgd,
            Some(s) => parse_enum(format!("{key}.optimizer"), "optimizer", s, &Optimizer::ALL)?,
        };
        let schedule = match self.schedule.as_deref() {
            None => Schedule::Cosine,
            Some(s) => parse_enum(format!("{key}.schedule"), "schedule", s, &Schedule::ALL)?,
        };
        let (lr, momentum, weight_decay) = self.optimiser_numbers(key, optimizer)?;
        let eval_every = self.eval_every.unwrap_or(1);
        if eval_every == 0 {
            return Err(invalid(
                format!("{key}.eval_every"),
                "must be > 0 (1 evaluates after every epoch), got 0",
            ));
        }
        let test_every = super::TestEvery::parse(self.test_every.as_ref())
            .map_err(|m| invalid(format!("{key}.test_every"), m))?;
        let max_norm = self.max_norm(key)?;
        let (milestones, gamma) = self.milestones_gamma(key, schedule, epochs)?;
        let (jitter, crop) = self.shifts(key)?;
        let label_smoothing = self.label_smoothing.unwrap_or(0.0);
        if !(label_smoothing.is_finite() && (0.0..1.0).contains(&label_smoothing)) {
            return Err(invalid(
                format!("{key}.label_smoothing"),
                format!("must be in [0, 1) (0.1 is usual), got {label_smoothing}"),
            ));
        }
        let (precision, weights) = self.numerics(key, max_norm)?;
        Ok(TrainCfg {
            weights,
            precision,
            cudnn_benchmark: self.cudnn_benchmark.unwrap_or(false),
            label_smoothing,
            milestones,
            gamma,
            crop,
            flip: self.flip.unwrap_or(false),
            max_norm,
            jitter,
            eval_every,
            test_every,
            epochs,
            batch_size,
            optimizer,
            lr,
            momentum,
            weight_decay,
            schedule,
        })
    }

    /// `lr` (by default 0.05 for SGD, 0.001 otherwise), `momentum` and `weight_decay`, each
    /// within the float32 range libtorch's optimisers hold them in.
    fn optimiser_numbers(
        &self,
        key: &str,
        optimizer: Optimizer,
    ) -> Result<(f64, f64, f64), ConfigError> {
        let default_lr = if optimizer == Optimizer::Sgd {
            0.05
        } else {
            1e-3
        };
        let lr = self.lr.unwrap_or(default_lr);
        if !(lr.is_finite() && lr > 0.0) {
            return Err(invalid(
                format!("{key}.lr"),
                format!("must be > 0, got {lr}"),
            ));
        }
        // libtorch's optimizers hold these as float32: a larger value is a crash, not a run.
        let float32 = |name: &str, v: f64| {
            if v > f32::MAX as f64 {
                Err(invalid(
                    format!("{key}.{name}"),
                    format!(
                        "must be at most {:e} (libtorch's float32 range), got {v:e}",
                        f32::MAX
                    ),
                ))
            } else {
                Ok(())
            }
        };
        float32("lr", lr)?;
        let momentum = check_prob(
            &format!("{key}.momentum"),
            self.momentum.unwrap_or(0.9),
            false,
        )?;
        let weight_decay = self.weight_decay.unwrap_or(0.0);
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return Err(invalid(
                format!("{key}.weight_decay"),
                format!("must be >= 0, got {weight_decay}"),
            ));
        }
        float32("weight_decay", weight_decay)?;
        Ok((lr, momentum, weight_decay))
    }

    /// `jitter` and `crop`: the two ways of shifting the images, one at a time.
    fn shifts(&self, key: &str) -> Result<(usize, usize), ConfigError> {
        let jitter = self.jitter.unwrap_or(0);
        if jitter > 8 {
            return Err(invalid(
                format!("{key}.jitter"),
                format!("must be at most 8 pixels (the paper shifts by up to 2), got {jitter}"),
            ));
        }
        let crop = self.crop.unwrap_or(0);
        if crop > 16 {
            return Err(invalid(
                format!("{key}.crop"),
                format!("must be at most 16 pixels of padding (CIFAR recipes use 4), got {crop}"),
            ));
        }
        if crop > 0 && jitter > 0 {
            return Err(invalid(
                format!("{key}.crop"),
                "and train.jitter both shift the images; use one",
            ));
        }
        Ok((jitter, crop))
    }

    /// `max_norm`, when set: a positive bound.
    fn max_norm(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        let max_norm = self.max_norm;
        if let Some(c) = max_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(invalid(
                    format!("{key}.max_norm"),
                    format!(
                        "must be > 0 (the largest L2 norm of a hidden unit's incoming weights; \
                         Hinton et al. 2012 use 15 on raw pixels, 3 to 4 is usual), got {c}"
                    ),
                ));
            }
        }
        Ok(max_norm)
    }

    /// `milestones` and `gamma`: with `schedule: multistep` (milestones required, increasing,
    /// within the epochs; gamma by default [`DEFAULT_GAMMA`]), refused with any other schedule.
    fn milestones_gamma(
        &self,
        key: &str,
        schedule: Schedule,
        epochs: usize,
    ) -> Result<(Vec<usize>, Option<f64>), ConfigError> {
        let multistep = schedule == Schedule::Multistep;
        let milestones = self.milestones.clone().unwrap_or_default();
        if multistep {
            if milestones.is_empty() {
                return Err(invalid(
                    format!("{key}.milestones"),
                    "required with schedule: multistep (the 0-based epochs after which lr is \
                     multiplied by gamma, e.g. [150, 180, 210] for 240 epochs)",
                ));
            }
            if let Some(w) = milestones.windows(2).find(|w| w[0] >= w[1]) {
                return Err(invalid(
                    format!("{key}.milestones"),
                    format!("must increase, got {} then {}", w[0], w[1]),
                ));
            }
            if let Some(m) = milestones.iter().find(|&&m| m == 0 || m >= epochs) {
                return Err(invalid(
                    format!("{key}.milestones"),
                    format!(
                        "{m} is not between 1 and {} (epochs: {epochs}): it would never decay, \
                         or decay from the start",
                        epochs - 1
                    ),
                ));
            }
        } else {
            for (name, given) in [
                ("milestones", self.milestones.is_some()),
                ("gamma", self.gamma.is_some()),
            ] {
                if given {
                    return Err(invalid(
                        format!("{key}.{name}"),
                        format!(
                            "only with schedule: multistep (the schedule is {})",
                            enum_name(&schedule)
                        ),
                    ));
                }
            }
        }
        let gamma = match self.gamma {
            Some(g) if !(g.is_finite() && g > 0.0 && g <= 1.0) => {
                return Err(invalid(
                    format!("{key}.gamma"),
                    format!("must be in (0, 1], got {g}"),
                ))
            }
            Some(g) => Some(g),
            None => multistep.then_some(DEFAULT_GAMMA),
        };
        Ok((milestones, gamma))
    }

    /// `precision` and `weights`, with what they do not combine with.
    fn numerics(
        &self,
        key: &str,
        max_norm: Option<f64>,
    ) -> Result<(Precision, super::Weights), ConfigError> {
        let precision = match self.precision.as_deref() {
            None => Precision::Fp32,
            Some("tf32") => {
                return Err(invalid(
                    format!("{key}.precision"),
                    "tf32 is not offered: libtorch's TensorFloat-32 switches \
                     (at::Context::setAllowTF32CuBLAS/CuDNN) are not bound by tch and reachable \
                     only through unsafe C++ calls; use fp32 or bf16",
                ))
            }
            Some(s) => parse_enum(format!("{key}.precision"), "precision", s, &Precision::ALL)?,
        };
        if precision == Precision::Bf16 && max_norm.is_some() {
            return Err(invalid(
                format!("{key}.precision"),
                "bf16 and train.max_norm do not combine: the constraint acts on the bfloat16 \
                 model's rows, not on the float32 master weights the optimiser updates",
            ));
        }
        let weights = match self.weights.as_deref() {
            None => super::Weights::Last,
            Some(s) => parse_enum(format!("{key}.weights"), "weights", s, &super::Weights::ALL)?,
        };
        if weights == super::Weights::Best && precision == Precision::Bf16 {
            return Err(invalid(
                format!("{key}.weights"),
                "best and train.precision: bf16 do not combine yet (the kept weights are the \
                 bfloat16 model's, and training ends with the float32 masters); use fp32 or \
                 weights: last",
            ));
        }
        Ok((precision, weights))
    }
}

/// `pack: auto | off | N` (N > 0).
pub(crate) fn parse_pack(v: Option<&serde_yaml::Value>) -> Result<Pack, ConfigError> {
    let bad = |got: String| {
        invalid(
            "pack",
            format!("expected auto, off or a pack size > 0, got {got}"),
        )
    };
    match v {
        None | Some(serde_yaml::Value::Null) => Ok(Pack::Auto),
        Some(serde_yaml::Value::String(s)) if s == "auto" => Ok(Pack::Auto),
        Some(serde_yaml::Value::String(s)) if s == "off" => Ok(Pack::Off),
        Some(serde_yaml::Value::Bool(false)) => Ok(Pack::Off),
        Some(serde_yaml::Value::Number(n)) => match n.as_u64() {
            Some(k) if k > 0 => Ok(Pack::Max(k as usize)),
            _ => Err(bad(n.to_string())),
        },
        Some(other) => Err(bad(crate::config::value_text(other))),
    }
}

/// `dataset:` with its defaults, checked.
fn resolve_dataset(ds: &super::RawDataset) -> Result<DatasetCfg, ConfigError> {
    let ds_name = ds.name.as_deref().unwrap_or("fashion-mnist");
    let dataset = DatasetCfg {
        name: DatasetName::parse(ds_name).ok_or_else(|| {
            invalid(
                "dataset.name",
                format!(
                    "unknown dataset `{ds_name}` (known: {})",
                    DatasetName::known().join(", ")
                ),
            )
        })?,
        dir: ds.dir.clone(),
        val_size: ds.val_size.unwrap_or(DEFAULT_VAL_SIZE),
        train_limit: ds.train_limit,
        data_seed: ds.data_seed.unwrap_or(0),
        transfer_fraction: ds.transfer_fraction.unwrap_or(1.0),
        omit_classes: ds.omit_classes.clone().unwrap_or_default(),
        keep_classes: ds.keep_classes.clone().unwrap_or_default(),
        classes: ds.classes,
    };
    check_classes(&dataset)?;
    let f = dataset.transfer_fraction;
    if !(f > 0.0 && f <= 1.0) {
        return Err(invalid(
            "dataset.transfer_fraction",
            format!(
                "must be in (0, 1] (the share of the training images the students see), got {f}"
            ),
        ));
    }
    if matches!(dataset.name, DatasetName::Folder(_)) && dataset.dir.is_none() {
        return Err(invalid("dataset.dir", "required when dataset.name is idx"));
    }
    if let Some(c) = dataset.classes {
        if !(2..=256).contains(&c) {
            return Err(invalid(
                "dataset.classes",
                format!("must be 2 to 256 (labels are bytes), got {c}"),
            ));
        }
    }
    if dataset.train_limit == Some(0) {
        return Err(invalid(
            "dataset.train_limit",
            "must be > 0 (or null for all images)",
        ));
    }
    Ok(dataset)
}

/// A TorchScript student trains in float32 (bf16 is refused), and kd-sweep cannot see its
/// layers (`max_norm` is refused).
fn check_scripted_student(model: &ModelSpec, train: &TrainCfg) -> Result<(), ConfigError> {
    if !matches!(model, ModelSpec::Torchscript(_)) {
        return Ok(());
    }
    if train.max_norm.is_some() {
        return Err(invalid(
            "student.train.max_norm",
            "not offered for a TorchScript student (kd-sweep does not know which of its \
             tensors are a layer's weights); constrain the norms in the module itself",
        ));
    }
    if train.precision == Precision::Bf16 {
        return Err(invalid(
            "student.train.precision",
            "bf16 is not offered for a TorchScript student (kd-sweep trains its module in \
             float32); use fp32, or a zoo student for bf16",
        ));
    }
    Ok(())
}

impl RawConfig {
    pub(super) fn resolve_base(&self, gpus: &dyn Fn() -> usize) -> Result<Resolved, ConfigError> {
        let name = check_name(&self.name)?;
        let dataset = resolve_dataset(&self.dataset)?;
        let seeds = self.seeds_and_counts()?;
        let device = resolve_device(self.device.as_ref(), gpus)?;
        let (teacher, ensemble) = super::ensemble::resolve_teachers(&self.teacher)?;
        let student_train = self
            .student
            .train
            .clone()
            .unwrap_or_default()
            .resolve("student.train", Role::Student)?;
        for t in ensemble
            .as_ref()
            .map_or(std::slice::from_ref(&teacher), |e| &e.members)
        {
            check_cudnn(&device, &t.train, &student_train)?;
        }
        let student_model = RawModel::resolve(
            self.student_model()?.as_ref(),
            "student.model",
            Role::Student,
        )?;
        check_scripted_student(&student_model, &student_train)?;
        let kd = super::kd::resolve(&self.kd)?;
        if let Some(e) = &ensemble {
            super::ensemble::check_objective(e, &kd)?;
            super::ensemble::check_students(e, &student_train)?;
        }
        let checkpoint_every = super::every::resolve(self.checkpoint_every.as_ref())?;
        Ok(Resolved {
            checkpoint_every,
            search: self.search.clone().unwrap_or_default().resolve()?,
            save: match &self.save {
                Some(s) => parse_enum("save".into(), "save", s, &Save::ALL)?,
                None => Save::default(),
            },
            name: name.to_string(),
            dataset,
            workers: self.workers.unwrap_or(device.len()),
            pack: parse_pack(self.pack.as_ref())?,
            device,
            threads: self.threads,
            seeds,
            teacher,
            ensemble,
            student: StudentCfg {
                model: student_model,
                train: student_train,
            },
            kd,
            baseline: self.baseline.unwrap_or(true),
            grid: vec![],
            cells: vec![],
            expect: resolve_expect(self.expect.as_deref())?,
        })
    }

    /// `seeds` (by default `[0]`; none twice), and `threads` and `workers` above 0 when given.
    fn seeds_and_counts(&self) -> Result<Vec<u64>, ConfigError> {
        let seeds = self.seeds.clone().unwrap_or_else(|| vec![0]);
        if seeds.is_empty() {
            return Err(invalid("seeds", "the list is empty"));
        }
        if let Some(i) = (1..seeds.len()).find(|&i| seeds[..i].contains(&seeds[i])) {
            return Err(invalid(
                format!("seeds[{i}]"),
                format!("{} appears twice", seeds[i]),
            ));
        }
        if self.threads == Some(0) {
            return Err(invalid("threads", "must be > 0 (or null for one per core)"));
        }
        if self.workers == Some(0) {
            return Err(invalid(
                "workers",
                "must be > 0 (or null for one worker per listed device)",
            ));
        }
        Ok(seeds)
    }

    /// `student.model`, or the model `student.torchscript` stands for.
    fn student_model(&self) -> Result<Option<RawModel>, ConfigError> {
        let Some(file) = &self.student.torchscript else {
            return Ok(self.student.model.clone());
        };
        if self.student.model.is_some() {
            return Err(invalid(
                "student.model",
                "not used with student.torchscript (the TorchScript module is the whole \
                 student); remove one of them",
            ));
        }
        let mut m = serde_yaml::Mapping::new();
        m.insert("arch".into(), "torchscript".into());
        m.insert("file".into(), file.to_string_lossy().as_ref().into());
        Ok(Some(RawModel(m)))
    }
}
