//! The resolved training recipe of a role (`teacher.train`, `student.train`): optimiser,
//! schedule, evaluation and augmentation, as the ids and records see them.

use serde::{Deserialize, Serialize};

use super::enum_name;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    Sgd,
    Adam,
    Adamw,
}

impl Optimizer {
    pub const ALL: [Optimizer; 3] = [Optimizer::Sgd, Optimizer::Adam, Optimizer::Adamw];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Cosine decay from `lr` to 0 over all steps.
    Cosine,
    Constant,
    /// `lr` times `gamma` for each of `train.milestones` passed: from 0-based epoch `m` on
    /// (PyTorch's `MultiStepLR` stepped once per epoch; RepDistiller's `adjust_learning_rate`).
    Multistep,
}

impl Schedule {
    pub const ALL: [Schedule; 3] = [Schedule::Cosine, Schedule::Constant, Schedule::Multistep];
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainCfg {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Validation and test accuracy are measured every this many epochs and after the last.
    /// Left out of the serialised form (and so of every id) at its default, 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub eval_every: usize,
    /// Which of those epochs also evaluate the test split. Reported numbers (`test_acc` after
    /// the last epoch, `best_test_acc` after the best validation epoch) are the same either way,
    /// so it is left out of the serialised form (and so of every id) at its default, `best`.
    #[serde(default, skip_serializing_if = "TestEvery::is_best")]
    pub test_every: TestEvery,
    /// Training images are shifted by up to this many pixels in each direction (0: none). A KD
    /// student with jitter learns from the teacher's logits on the shifted batch (online
    /// teacher). Left out of the serialised form (and so of every id) at 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub jitter: usize,
    /// Max-norm constraint (Hinton et al. 2012): after every step, each hidden unit's incoming
    /// weight vector is rescaled to L2 norm at most this (`torch.renorm(w, 2, 0, c)` on every
    /// linear layer but the output). Left out of the serialised form (and so of every id) unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_norm: Option<f64>,
    /// `schedule: multistep`'s epochs (0-based epoch numbers, increasing) after which the rate
    /// is multiplied by `gamma`. Left out of the serialised form when empty (other schedules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub milestones: Vec<usize>,
    /// `schedule: multistep`'s factor (0.1 by default); unset for other schedules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// Random crop with zero padding (torchvision's `RandomCrop(H, padding=crop)`): each image is
    /// padded by this many black pixels on every side and an `H x W` window cut at a random
    /// offset. 0: none; left out of the serialised form at 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub crop: usize,
    /// Random horizontal flip of half the images (`RandomHorizontalFlip()`); left out of the
    /// serialised form when off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub flip: bool,
    /// Label smoothing of the hard term (PyTorch's `cross_entropy(label_smoothing=eps)`), for
    /// this role's every trial: KD students and baselines alike. Left out of the serialised
    /// form at 0.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub label_smoothing: f64,
    /// The arithmetic of training and evaluation ([`Precision`]). Left out of the serialised
    /// form (and so of every id) at `fp32`.
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
    /// cuDNN chooses each convolution's algorithm by timing the candidates
    /// (`torch.backends.cudnn.benchmark`), which can change the numbers: CUDA only, off by
    /// default, left out of the serialised form when off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cudnn_benchmark: bool,
    /// Which weights the trial ends with ([`Weights`]). Left out of the serialised form (and so
    /// of every id) at `last`.
    #[serde(default, skip_serializing_if = "Weights::is_last")]
    pub weights: Weights,
}

/// `train.weights`: the weights a trial ends with, which its final numbers measure and, for a
/// teacher, which are cached and teach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Weights {
    /// The last epoch's (default).
    #[default]
    Last,
    /// The best validation epoch's (the earliest of ties; the last epoch's without a
    /// validation split).
    Best,
}

impl Weights {
    pub const ALL: [Weights; 2] = [Weights::Last, Weights::Best];

    fn is_last(&self) -> bool {
        *self == Weights::Last
    }
}

/// `save:`, which weights of every student a sweep keeps in `OUT/models/<trial id>.safetensors`
/// (`run/models.rs`): those of its best validation epoch (default), its last epoch's, or none.
/// A run option: in no id. The weights kept are those its record's numbers measure:
/// `best_test_acc` for `best`, `test_acc` for `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Save {
    /// The best validation epoch's (the last epoch's without a validation split).
    #[default]
    Best,
    Last,
    None,
}

impl Save {
    pub const ALL: [Save; 3] = [Save::Best, Save::Last, Save::None];

    pub fn is_best(&self) -> bool {
        *self == Save::Best
    }
}

/// `train.precision`: the number format a role's trials train and evaluate in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32 throughout (libtorch's default).
    #[default]
    Fp32,
    /// bfloat16 weights and activations, with float32 master weights: the forward and backward
    /// passes run on a bfloat16 copy of the model and bfloat16 inputs; the loss is computed in
    /// float32 from the logits; the gradients are cast to float32 and the optimiser updates the
    /// float32 master weights, which are then copied into the bfloat16 model. Evaluation runs
    /// the bfloat16 model. After training the model holds the float32 masters (and its buffers,
    /// such as batch-norm statistics, cast back to float32).
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 2] = [Precision::Fp32, Precision::Bf16];

    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn one() -> usize {
    1
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

/// `train.test_every`: which evaluated epochs (`train.eval_every`) also measure the test split.
/// Written `best` or a number, in the config and in the resolved recipe alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TestEvery {
    /// At the best validation epoch and after the last: every test number a record reports,
    /// and no other (the test set chooses nothing). The best epoch's weights are kept and
    /// tested once training ends, so a student has one or two test passes.
    #[default]
    Best,
    /// Those, and every evaluated epoch that is a multiple of N: dense test curves.
    Every(usize),
}

impl TestEvery {
    pub fn is_best(&self) -> bool {
        *self == TestEvery::Best
    }

    /// The config's value: `best` or a number of epochs > 0 (absent is `best`).
    pub fn parse(v: Option<&serde_yaml::Value>) -> Result<TestEvery, String> {
        match v {
            None => Ok(TestEvery::Best),
            Some(serde_yaml::Value::String(b)) if b == "best" => Ok(TestEvery::Best),
            Some(serde_yaml::Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => {
                Ok(TestEvery::Every(n.as_u64().unwrap_or(1) as usize))
            }
            Some(other) => Err(format!(
                "must be `best` (the test split at the best validation epoch and after the \
                 last: what the records report) or a number of epochs > 0 (dense test curves; \
                 1 = every evaluated epoch), got {}",
                super::value_text(other)
            )),
        }
    }
}

impl Serialize for TestEvery {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TestEvery::Best => s.serialize_str("best"),
            TestEvery::Every(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for TestEvery {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_yaml::Value::deserialize(d)?;
        TestEvery::parse(Some(&v)).map_err(serde::de::Error::custom)
    }
}

impl TrainCfg {
    /// One epoch of `optimizer` at a constant `lr` in batches of `batch_size`, momentum 0.9 (for
    /// SGD), no weight decay, no augmentation, evaluated after the epoch: a recipe to build on
    /// with `..` (the bench's steps).
    pub fn plain(optimizer: Optimizer, lr: f64, batch_size: usize) -> TrainCfg {
        TrainCfg {
            epochs: 1,
            batch_size,
            optimizer,
            lr,
            momentum: 0.9,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            eval_every: 1,
            test_every: TestEvery::Best,
            jitter: 0,
            max_norm: None,
            milestones: vec![],
            gamma: None,
            crop: 0,
            flip: false,
            label_smoothing: 0.0,
            precision: Precision::Fp32,
            cudnn_benchmark: false,
            weights: Weights::Last,
        }
    }

    /// Whether training images are augmented (`jitter`, `crop` or `flip`): a KD student then
    /// needs the teacher online, on each augmented batch.
    pub fn augments(&self) -> bool {
        self.jitter > 0 || self.crop > 0 || self.flip
    }

    /// The augmentation as records and reports name it (`crop4+flip`), `None` without one.
    pub fn augment_label(&self) -> Option<String> {
        let parts: Vec<String> = [
            (self.jitter > 0).then(|| format!("jitter{}", self.jitter)),
            (self.crop > 0).then(|| format!("crop{}", self.crop)),
            self.flip.then(|| "flip".to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join("+"))
    }

    /// The schedule as records name it: `cosine`, `constant`, `multistep 150,180,210 x0.1`.
    pub fn schedule_label(&self) -> String {
        let name = enum_name(&self.schedule);
        match self.schedule {
            Schedule::Multistep => format!(
                "{name} {} x{}",
                self.milestones
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                self.gamma.map_or("?".to_string(), |g| g.to_string())
            ),
            _ => name,
        }
    }

    /// Whether `epoch` (1-based) of this training is evaluated on the validation split.
    pub fn evaluates(&self, epoch: u32) -> bool {
        epoch as usize == self.epochs || (epoch as usize).is_multiple_of(self.eval_every.max(1))
    }

    /// Whether an evaluated `epoch` measures the test split as it happens: after the last
    /// epoch, and with `test_every: N` at the multiples of N. A student's best validation epoch
    /// is measured too, with its weights kept until the end when not here (`train::kept`).
    pub fn tests(&self, epoch: u32) -> bool {
        self.evaluates(epoch)
            && (epoch as usize == self.epochs
                || matches!(self.test_every, TestEvery::Every(n) if (epoch as usize).is_multiple_of(n.max(1))))
    }
}
