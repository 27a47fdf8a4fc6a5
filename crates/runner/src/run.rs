//! `kd sweep`: resolve the config, pick the device, load the data, get the teacher (checkpoint,
//! cache or training), then train every student trial and write the frames and the report after
//! each one.

use std::path::{Path, PathBuf};

use kd_data::Dataset;
use kd_model_zoo::{InputShape, ModelError, ModelSpec, Net};
use kd_report::{EpochRow, ReportError, TrialRow};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{nn, Device, Tensor};

use crate::config::{self, ConfigError, Resolved, StudentTrial, TrialKind};
use crate::pool;
use crate::progress::Progress;
use crate::train::{self, EpochLog, Outcome, SplitTensors, Status, TrainData};

/// Why a run could not start or finish. [`RunError::exit_code`] maps each to the CLI's codes.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Data(#[from] kd_data::DataError),
    #[error("{key}: {message}")]
    Model { key: String, message: String },
    #[error("{key}: {message}")]
    Device { key: String, message: String },
    #[error("{file}: cannot load the teacher checkpoint: {message}")]
    Checkpoint { file: PathBuf, message: String },
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("teacher training failed: {0}")]
    Teacher(String),
    #[error("worker: {0}")]
    Worker(String),
    #[error("{file}: another kd sweep (pid {pid}) is writing to this folder; wait for it or use another --out")]
    Busy { file: PathBuf, pid: String },
}

impl RunError {
    /// 2 for bad input or environment (config, data, device, checkpoint), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_)
            | RunError::Data(_)
            | RunError::Model { .. }
            | RunError::Device { .. }
            | RunError::Checkpoint { .. }
            | RunError::Busy { .. } => 2,
            RunError::Io { .. }
            | RunError::Report(_)
            | RunError::Teacher(_)
            | RunError::Worker(_) => 1,
        }
    }
}

fn io_err(file: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        file: file.to_path_buf(),
        source,
    }
}

/// Options that are not part of the experiment (so not part of any hash).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Output folder; default `results/<name>/`.
    pub out: Option<PathBuf>,
    /// Ignore the results of earlier runs in OUT and train every trial again.
    pub fresh: bool,
}

/// What a finished sweep hands back to the CLI.
#[derive(Debug)]
pub struct Summary {
    pub out: PathBuf,
    pub trials: Vec<TrialRow>,
    /// Trials whose status is not `ok`.
    pub unfinished: usize,
}

/// `$KD_CACHE_DIR`, or `~/.cache/kd-sweep`.
pub fn cache_root() -> PathBuf {
    kd_data::dir_from_env("KD_CACHE_DIR", "")
}

/// Short content hash (SHA-256 of the canonical JSON, 12 hex digits).
pub fn content_hash(v: &impl Serialize) -> String {
    let json = serde_json::to_vec(v).expect("hash inputs serialise");
    hex::encode(&Sha256::digest(&json)[..6])
}

/// Turn a device name into a libtorch device, checking that it exists.
pub fn select_device(name: &str) -> Result<Device, RunError> {
    let cuda = tch::Cuda::is_available();
    let count = tch::Cuda::device_count();
    let missing = |what: String| RunError::Device {
        key: "device".into(),
        message: format!(
            "{what}, but this libtorch sees {count} CUDA device(s) (CUDA available: {cuda}). \
             Use `device: cpu` or `auto`, and run `kd doctor` to see what libtorch finds"
        ),
    };
    match name {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" if cuda => Ok(Device::Cuda(0)),
        "cuda" => Err(missing("`cuda` was asked for".into())),
        other => {
            let n: usize = other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| RunError::Device {
                    key: "device".into(),
                    message: format!("`{other}` is not a device (use auto, cpu, cuda or cuda:N)"),
                })?;
            if cuda && (n as i64) < count {
                Ok(Device::Cuda(n))
            } else {
                Err(missing(format!("`{other}` was asked for")))
            }
        }
    }
}

fn device_label(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn model_err(key: &str) -> impl FnOnce(ModelError) -> RunError + '_ {
    move |e| match e {
        ModelError::Spec { key: k, message } => RunError::Model {
            key: format!("{key}.{k}"),
            message,
        },
    }
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn epoch_rows(trial_id: &str, logs: &[EpochLog]) -> Vec<EpochRow> {
    logs.iter()
        .map(|l| EpochRow {
            trial_id: trial_id.to_string(),
            epoch: l.epoch,
            train_loss: l.train_loss,
            soft_loss: l.soft_loss,
            hard_loss: l.hard_loss,
            train_acc: l.train_acc,
            val_acc: l.val_acc,
            test_acc: l.test_acc,
            lr: l.lr,
            seconds: l.seconds,
        })
        .collect()
}

/// The teacher's training record, kept beside its cached checkpoint so a reused teacher still
/// reports how it was trained.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TeacherRecord {
    epochs: Vec<EpochLog>,
    best_epoch: Option<u32>,
    wall_s: f64,
}

struct Loaded {
    dataset: Dataset,
    input: InputShape,
    train: SplitTensors,
    val: SplitTensors,
    test: SplitTensors,
}

/// Find and read the configured dataset, split as configured.
fn load_dataset(cfg: &Resolved) -> Result<(Dataset, InputShape), RunError> {
    let dir = kd_data::locate(cfg.dataset.name, cfg.dataset.dir.as_deref())?;
    let dataset = Dataset::load(
        cfg.dataset.name,
        &dir,
        &kd_data::SplitSpec {
            val_size: cfg.dataset.val_size,
            train_limit: cfg.dataset.train_limit,
            data_seed: cfg.dataset.data_seed,
        },
    )?;
    let input = InputShape {
        channels: 1,
        height: dataset.height,
        width: dataset.width,
    };
    Ok((dataset, input))
}

fn load_data(cfg: &Resolved, device: Device) -> Result<Loaded, RunError> {
    let (dataset, input) = load_dataset(cfg)?;
    let to = |split| {
        let (x, y) = dataset.tensors(split, device);
        SplitTensors { x, y }
    };
    let (train, val, test) = (to(&dataset.train), to(&dataset.val), to(&dataset.test));
    Ok(Loaded {
        dataset,
        input,
        train,
        val,
        test,
    })
}

/// What identifies a trial in its row, independent of how it ended.
struct TrialMeta<'a> {
    id: &'a str,
    kind: TrialKind,
    seed: u64,
    spec: &'a ModelSpec,
    params: usize,
    weights: Option<&'a kd_loss::KdWeights>,
    epochs: usize,
    /// Images trained on, in the validation split and in the test set.
    images: Sizes,
}

/// (train, validation, test) image counts of a trial.
type Sizes = (u64, u64, u64);

/// A row kept from an earlier run, with its image counts filled in when it predates those
/// columns: they follow from the resolved data config, which is part of the trial id.
fn with_sizes(row: &TrialRow, (train, val, test): Sizes) -> TrialRow {
    let mut row = row.clone();
    row.train_images.get_or_insert(train);
    row.val_images.get_or_insert(val);
    row.test_images.get_or_insert(test);
    row
}

impl TrialMeta<'_> {
    fn row(&self, outcome: Option<&Outcome>, status: &str) -> TrialRow {
        let w = self.weights;
        TrialRow {
            trial_id: self.id.to_string(),
            kind: self.kind.as_str().into(),
            seed: self.seed,
            arch: self.spec.arch().into(),
            hidden: self.spec.shape_label(),
            params: self.params as u64,
            temperature: w.map(|w| w.temperature),
            alpha: w.map(|w| w.alpha),
            beta: w.map(|w| w.beta),
            soft_loss: w.map(|w| w.soft_loss.as_str().to_string()),
            epochs: self.epochs as u32,
            status: status.into(),
            train_acc: outcome.and_then(|o| o.train_acc),
            val_acc: outcome.and_then(|o| o.val_acc),
            test_acc: outcome.and_then(|o| o.test_acc),
            test_errors: outcome.and_then(|o| o.test_errors),
            best_epoch: outcome.and_then(|o| o.best_epoch),
            wall_s: outcome.map_or(0.0, |o| o.wall_s),
            finished_at: now_rfc3339(),
            swept: vec![],
            baseline_id: None,
            train_images: Some(self.images.0),
            val_images: Some(self.images.1),
            test_images: Some(self.images.2),
        }
    }
}

fn trial_line(r: &TrialRow) -> String {
    let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v));
    let kd = match (r.temperature, r.alpha) {
        (Some(t), Some(a)) if r.kind == "kd" => format!(" T={t} alpha={a}"),
        _ => String::new(),
    };
    format!(
        "[{}] {} {} {}{} seed={} status={} test={} val={} ({:.1}s)",
        r.trial_id,
        r.kind,
        r.arch,
        r.hidden,
        kd,
        r.seed,
        r.status,
        pct(r.test_acc),
        pct(r.val_acc),
        r.wall_s
    )
}

/// The content hash of the teacher: its model, training, seed and data, and a checkpoint by its
/// content (so replacing the file re-runs the KD trials and recomputes the cached logits even
/// when its path stays the same).
fn teacher_hash(cfg: &Resolved, data: &Loaded) -> Result<String, RunError> {
    let t = &cfg.teacher;
    let checkpoint_digest = match &t.checkpoint {
        Some(ckpt) => Some(hex::encode(Sha256::digest(std::fs::read(ckpt).map_err(
            |e| RunError::Checkpoint {
                file: ckpt.clone(),
                message: format!("cannot read it: {e}"),
            },
        )?))),
        None => None,
    };
    Ok(content_hash(&(
        "teacher-v1",
        &t.model,
        &t.train,
        t.seed,
        cfg.dataset.teacher_view(),
        data.dataset.dir.to_string_lossy(),
        &checkpoint_digest,
    )))
}

/// Get the teacher: from `teacher.checkpoint`, from the cache, or by training it (then cached).
fn obtain_teacher(
    cfg: &Resolved,
    data: &Loaded,
    hash: &str,
    device: Device,
    progress: &mut Progress,
) -> Result<Teacher, RunError> {
    let t = &cfg.teacher;
    let classes = data.dataset.classes;
    let trial_id = format!("teacher-{hash}");
    let params = t.model.param_count(data.input, classes);
    let mut vs = nn::VarStore::new(device);
    tch::manual_seed(t.seed as i64);
    let net = t
        .model
        .build(&vs.root(), data.input, classes)
        .map_err(model_err("teacher.model"))?;
    let cache_dir = cache_root().join("teachers");
    let cached = cache_dir.join(format!("{hash}.ot"));
    let record_path = cache_dir.join(format!("{hash}.json"));
    let logits_file = cache_dir.join(format!("{hash}.logits.pt"));
    // A loaded teacher's training accuracy comes from its logits on the training split, which
    // the students need anyway: one pass over it, not two.
    let eval_only = |net: &Net, logits: &Tensor, record: Option<TeacherRecord>| {
        let (test_acc, test_errors) = train::evaluate(net, &data.test);
        Outcome {
            status: Status::Ok,
            train_acc: Some(train::accuracy(logits, &data.train.y).0),
            val_acc: Some(train::evaluate(net, &data.val).0),
            test_acc: Some(test_acc),
            test_errors: Some(test_errors),
            best_epoch: record.as_ref().and_then(|r| r.best_epoch),
            wall_s: record.as_ref().map_or(0.0, |r| r.wall_s),
            epochs: record.map_or_else(Vec::new, |r| r.epochs),
        }
    };
    let (outcome, epochs, logits) = if let Some(ckpt) = &t.checkpoint {
        vs.load(ckpt).map_err(|e| RunError::Checkpoint {
            file: ckpt.clone(),
            message: format!(
                "{e}. It must be a tch VarStore saved for teacher.model = {} {} on {}x{} inputs",
                t.model.arch(),
                t.model.shape_label(),
                data.input.height,
                data.input.width
            ),
        })?;
        progress.note(&format!("teacher: loaded {}", ckpt.display()));
        let logits = teacher_logits(&net, &data.train, &logits_file)?;
        (eval_only(&net, &logits, None), 0, logits)
    } else if cached.is_file() && vs.load(&cached).is_ok() {
        let record = std::fs::read(&record_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<TeacherRecord>(&b).ok());
        progress.note(&format!("teacher: reused cached {}", cached.display()));
        let logits = teacher_logits(&net, &data.train, &logits_file)?;
        (eval_only(&net, &logits, record), t.train.epochs, logits)
    } else {
        progress.start_trial(0, "teacher", t.train.epochs as u64);
        let outcome = train::train(
            &net,
            &vs,
            &t.train,
            &kd_loss::KdWeights::hard_only(),
            t.seed,
            &TrainData {
                train: &data.train,
                val: &data.val,
                test: &data.test,
                soft_targets: None,
            },
            |log| progress.epoch(0, log),
        )
        .map_err(|e| RunError::Teacher(e.to_string()))?;
        if outcome.status != Status::Ok {
            return Err(RunError::Teacher(
                "the loss became NaN or infinite; lower teacher.train.lr".into(),
            ));
        }
        std::fs::create_dir_all(&cache_dir).map_err(io_err(&cache_dir))?;
        let tmp = cache_dir.join(format!("{hash}.ot.tmp"));
        vs.save(&tmp).map_err(|e| RunError::Io {
            file: tmp.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        std::fs::rename(&tmp, &cached).map_err(io_err(&cached))?;
        let record = TeacherRecord {
            epochs: outcome.epochs.clone(),
            best_epoch: outcome.best_epoch,
            wall_s: outcome.wall_s,
        };
        kd_report::write_atomic(
            &record_path,
            &serde_json::to_vec(&record).expect("serialises"),
        )?;
        let logits = teacher_logits(&net, &data.train, &logits_file)?;
        (outcome, t.train.epochs, logits)
    };
    let row = TrialMeta {
        id: &trial_id,
        kind: TrialKind::Teacher,
        seed: t.seed,
        spec: &t.model,
        params,
        weights: None,
        epochs,
        images: (
            data.train.len() as u64,
            data.val.len() as u64,
            data.test.len() as u64,
        ),
    }
    .row(Some(&outcome), "ok");
    progress.finish_trial(0, &trial_line(&row));
    Ok(Teacher {
        row,
        epochs: outcome.epochs,
        logits,
        logits_file,
    })
}

/// What the students need of the teacher, once it is trained or loaded.
struct Teacher {
    row: TrialRow,
    epochs: Vec<EpochLog>,
    /// Its logits on every training image, `[n_train, classes]`, on the CPU.
    logits: Tensor,
    /// `teachers/<hash>.logits.pt`, where they are cached (workers read them there).
    logits_file: PathBuf,
}

/// The teacher's logits on every training image, computed once per teacher and kept in `file`
/// beside its checkpoint in the cache (workers and later sweeps read the file).
fn teacher_logits(teacher: &Net, train: &SplitTensors, file: &Path) -> Result<Tensor, RunError> {
    let n = train.len();
    if let Ok(t) = Tensor::load(file) {
        let size = t.size();
        if size.len() == 2 && size[0] == n {
            return Ok(t);
        }
    }
    let logits = train::predict(teacher, &train.x, 1000).to_device(Device::Cpu);
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = file.with_extension("pt.tmp");
    logits.save(&tmp).map_err(|e| RunError::Io {
        file: tmp.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    std::fs::rename(&tmp, file).map_err(io_err(file))?;
    Ok(logits)
}

/// Read the config at `path`, apply `--set KEY=VALUE` overrides and resolve it.
pub fn load_config(path: &Path, sets: &[String]) -> Result<Resolved, RunError> {
    Ok(config::load(path)?.with_sets(sets)?.resolve()?)
}

/// Run the sweep described by the config at `path`.
pub fn run_sweep(path: &Path, sets: &[String], opts: &RunOptions) -> Result<Summary, RunError> {
    run_resolved(&load_config(path, sets)?, opts)
}

/// The id of a student trial: a content hash of everything that determines its result. A
/// baseline's id leaves out the teacher and the KD weights, so one baseline serves every cell of
/// its student and seed, and changing a KD key re-runs only the KD trials.
pub fn student_trial_id(cfg: &Resolved, trial: &StudentTrial, teacher_id: &str) -> String {
    let data = cfg.dataset.student_view();
    let hash = match trial.kind {
        TrialKind::Kd => content_hash(&(
            "kd-v1",
            trial.seed,
            &trial.student,
            &trial.weights,
            &data,
            teacher_id,
        )),
        _ => content_hash(&("baseline-v1", trial.seed, &trial.student, &data)),
    };
    format!("{}-{hash}", trial.kind.as_str())
}

/// The paired baseline of a KD trial, if the plan has one.
fn baseline_of<'a>(plan: &'a [StudentTrial], trial: &StudentTrial) -> Option<&'a StudentTrial> {
    plan.iter().find(|b| {
        b.kind == TrialKind::Baseline && b.seed == trial.seed && b.student == trial.student
    })
}

/// An exclusive claim on an output folder (`OUT/.lock` holding our PID), released on drop. A lock
/// left by a process that no longer runs is taken over.
#[derive(Debug)]
pub struct OutLock(PathBuf);

impl OutLock {
    pub fn acquire(out: &Path) -> Result<OutLock, RunError> {
        let path = out.join(".lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(OutLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(&path).unwrap_or_default();
                    let pid = pid.trim();
                    let alive = !pid.is_empty() && Path::new("/proc").join(pid).exists();
                    if alive {
                        return Err(RunError::Busy {
                            file: path,
                            pid: pid.to_string(),
                        });
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Err(RunError::Busy {
            file: path,
            pid: "?".into(),
        })
    }
}

impl Drop for OutLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Rows of a previous run of this OUT that can be kept: finished trials (ok or diverged) and
/// their epochs. Unreadable files mean nothing is kept.
fn previous_results(out: &Path) -> (Vec<TrialRow>, Vec<EpochRow>) {
    let file = out.join("trials.parquet");
    let Ok(df) = kd_report::read_parquet(&file) else {
        return (vec![], vec![]);
    };
    let rows: Vec<TrialRow> = kd_report::trial_rows(&df, &file)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.status == "ok" || r.status == "diverged")
        .collect();
    let epochs = kd_report::read_parquet(&out.join("epochs.parquet"))
        .ok()
        .and_then(|df| kd_report::epoch_rows_of(&df).ok())
        .unwrap_or_default();
    (rows, epochs)
}

/// Print the plan and an estimate of its cost, without training.
pub fn dry_run(cfg: &Resolved) -> Result<String, RunError> {
    use std::fmt::Write as _;
    let (dataset, input) = load_dataset(cfg)?;
    let n = dataset.train.len();
    let n_student =
        kd_data::transfer_rows(n, cfg.dataset.transfer_fraction, cfg.dataset.data_seed).len();
    // Training costs about 3x the forward FLOPs (forward + backward) per image and epoch.
    let cost = |spec: &ModelSpec, epochs: usize, images: usize| {
        3.0 * spec.flops_per_sample(input, dataset.classes) as f64 * images as f64 * epochs as f64
    };
    let mut s = String::new();
    let teacher_flops = if cfg.teacher.checkpoint.is_some() {
        0.0
    } else {
        cost(&cfg.teacher.model, cfg.teacher.train.epochs, n)
    };
    let _ = writeln!(
        s,
        "teacher {} {} seed {}: {:.1} TFLOP{}",
        cfg.teacher.model.arch(),
        cfg.teacher.model.shape_label(),
        cfg.teacher.seed,
        teacher_flops / 1e12,
        if cfg.teacher.checkpoint.is_some() {
            " (checkpoint)"
        } else {
            " (0 if cached)"
        }
    );
    let mut total = teacher_flops;
    let plan = cfg.student_trials();
    for t in &plan {
        let f = cost(&t.student.model, t.student.train.epochs, n_student);
        total += f;
        let swept: Vec<String> = t.swept.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            s,
            "{} {} {} seed {} {}: {:.1} TFLOP",
            student_trial_id(cfg, t, "teacher"),
            t.kind.as_str(),
            t.student.model.shape_label(),
            t.seed,
            swept.join(" "),
            f / 1e12
        );
    }
    let _ = writeln!(
        s,
        "{} student trials + teacher: {:.1} TFLOP, about {:.0} min on 2 CPU cores at the ~100 GFLOP/s measured here",
        plan.len(),
        total / 1e12,
        total / 100e9 / 60.0
    );
    Ok(s)
}

/// Everything a student trial trains on, shared by every trial one process runs: the splits on
/// its device, the transfer set (`dataset.transfer_fraction` of the training split) and the
/// teacher's logits on it.
pub struct TrialContext {
    data: Loaded,
    /// The students' training images when they see only part of the training split.
    transfer: Option<SplitTensors>,
    /// Teacher logits for every image the students train on.
    soft_targets: Tensor,
    device: Device,
}

impl TrialContext {
    /// Load the data on `device` and the teacher's logits from `logits` (a file written by
    /// [`teacher_logits`]).
    pub fn load(cfg: &Resolved, device: Device, logits: &Path) -> Result<Self, RunError> {
        let data = load_data(cfg, device)?;
        let logits = Tensor::load(logits).map_err(|e| RunError::Io {
            file: logits.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Self::new(cfg, data, &logits, device))
    }

    fn new(cfg: &Resolved, data: Loaded, train_logits: &Tensor, device: Device) -> Self {
        let n = data.train.len() as usize;
        let rows = kd_data::transfer_rows(n, cfg.dataset.transfer_fraction, cfg.dataset.data_seed);
        let train_logits = train_logits.to_device(device);
        if rows.len() == n {
            return TrialContext {
                data,
                transfer: None,
                soft_targets: train_logits,
                device,
            };
        }
        let idx = Tensor::from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>())
            .to_device(device);
        TrialContext {
            transfer: Some(SplitTensors {
                x: data.train.x.index_select(0, &idx),
                y: data.train.y.index_select(0, &idx),
            }),
            soft_targets: train_logits.index_select(0, &idx),
            data,
            device,
        }
    }

    /// The images the students train on.
    pub fn student_train(&self) -> &SplitTensors {
        self.transfer.as_ref().unwrap_or(&self.data.train)
    }

    /// Train one student trial: libtorch seeded with the trial's seed, a fresh model, then
    /// [`train::train`] with the teacher's logits when it is a KD trial.
    pub fn run_trial(
        &self,
        trial: &StudentTrial,
        on_epoch: impl FnMut(&EpochLog),
    ) -> Result<Outcome, String> {
        tch::manual_seed(trial.seed as i64);
        let vs = nn::VarStore::new(self.device);
        let net = trial
            .student
            .model
            .build(&vs.root(), self.data.input, self.data.dataset.classes)
            .map_err(|e| e.to_string())?;
        train::train(
            &net,
            &vs,
            &trial.student.train,
            &trial.weights,
            trial.seed,
            &TrainData {
                train: self.student_train(),
                val: &self.data.val,
                test: &self.data.test,
                soft_targets: (trial.kind == TrialKind::Kd).then_some(&self.soft_targets),
            },
            on_epoch,
        )
        .map_err(|e| e.to_string())
    }
}

/// The sweep's results so far: turns finished trials into rows and rewrites the frames after
/// each one.
struct Book<'a> {
    cfg: &'a Resolved,
    plan: &'a [StudentTrial],
    teacher_id: &'a str,
    out: &'a Path,
    input: InputShape,
    classes: usize,
    /// The students' (train, validation, test) image counts.
    sizes: Sizes,
    rows: Vec<TrialRow>,
    epochs: Vec<EpochRow>,
    unfinished: usize,
}

impl Book<'_> {
    /// Rewrite the frames, rows in plan order (teacher first) whatever order trials end in.
    fn write(&mut self) -> Result<(), RunError> {
        let order: std::collections::HashMap<String, usize> =
            std::iter::once(self.teacher_id.to_string())
                .chain(
                    self.plan
                        .iter()
                        .map(|t| student_trial_id(self.cfg, t, self.teacher_id)),
                )
                .enumerate()
                .map(|(i, id)| (id, i))
                .collect();
        self.rows
            .sort_by_key(|r| order.get(&r.trial_id).copied().unwrap_or(usize::MAX));
        Ok(kd_report::write_frames(self.out, &self.rows, &self.epochs)?)
    }

    fn record(
        &mut self,
        index: usize,
        result: Result<Outcome, String>,
        progress: &mut Progress,
        slot: usize,
    ) -> Result<(), RunError> {
        let trial = &self.plan[index];
        let trial_id = student_trial_id(self.cfg, trial, self.teacher_id);
        let spec = &trial.student.model;
        let is_kd = trial.kind == TrialKind::Kd;
        let meta = TrialMeta {
            id: &trial_id,
            kind: trial.kind,
            seed: trial.seed,
            spec,
            params: spec.param_count(self.input, self.classes),
            weights: is_kd.then_some(&trial.weights),
            epochs: trial.student.train.epochs,
            images: self.sizes,
        };
        let mut row = match &result {
            Ok(o) => {
                self.epochs.extend(epoch_rows(&trial_id, &o.epochs));
                meta.row(Some(o), o.status.as_str())
            }
            Err(e) => {
                progress.note(&format!("[{trial_id}] failed: {e}"));
                meta.row(None, "failed")
            }
        };
        row.swept = trial.swept.clone();
        row.baseline_id = baseline_of(self.plan, trial)
            .filter(|_| is_kd)
            .map(|b| student_trial_id(self.cfg, b, self.teacher_id));
        if row.status != "ok" {
            self.unfinished += 1;
        }
        progress.finish_trial(slot, &trial_line(&row));
        self.rows.push(row);
        self.write()
    }
}

/// libtorch threads for each of `workers` processes: `threads:` if set, else the cores shared.
fn threads_per_worker(cfg: &Resolved, workers: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cfg.threads.unwrap_or((cores / workers.max(1)).max(1))
}

/// Run an already resolved config.
pub fn run_resolved(cfg: &Resolved, opts: &RunOptions) -> Result<Summary, RunError> {
    // Every listed device must exist before anything is written.
    let devices = cfg
        .device
        .iter()
        .map(|d| select_device(d))
        .collect::<Result<Vec<_>, _>>()?;
    let device = devices[0];
    let threads = threads_per_worker(cfg, 1);
    tch::set_num_threads(threads as i32);
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&cfg.name));
    std::fs::create_dir_all(&out).map_err(io_err(&out))?;
    let _lock = OutLock::acquire(&out)?;
    let (previous, previous_epochs) = if opts.fresh {
        (vec![], vec![])
    } else {
        previous_results(&out)
    };
    // The resolved config goes first, so every result can be traced to its inputs.
    let config_file = out.join("config.resolved.yaml");
    kd_report::write_atomic(&config_file, cfg.to_yaml().as_bytes())?;

    let data = load_data(cfg, device)?;
    let (input, classes) = (data.input, data.dataset.classes);
    for cell in &cfg.cells {
        cell.student
            .model
            .validate(input)
            .map_err(model_err("student.model"))?;
    }
    cfg.teacher
        .model
        .validate(input)
        .map_err(model_err("teacher.model"))?;

    let plan = cfg.student_trials();
    let mut progress = Progress::new(plan.len() as u64 + 1);
    progress.note(&format!(
        "{}: {} on {} ({} train / {} val / {} test images, {}x{}), device {}, {} threads",
        cfg.name,
        cfg.dataset.name.as_str(),
        data.dataset.dir.display(),
        data.train.len(),
        data.val.len(),
        data.test.len(),
        input.height,
        input.width,
        devices
            .iter()
            .map(|&d| device_label(d))
            .collect::<Vec<_>>()
            .join(", "),
        threads
    ));

    let hash = teacher_hash(cfg, &data)?;
    let teacher_id = format!("teacher-{hash}");
    let (n_train, n_val, n_test) = (
        data.train.len() as u64,
        data.val.len() as u64,
        data.test.len() as u64,
    );
    let n_transfer = kd_data::transfer_rows(
        n_train as usize,
        cfg.dataset.transfer_fraction,
        cfg.dataset.data_seed,
    )
    .len() as u64;
    if n_transfer < n_train {
        progress.note(&format!(
            "students learn from {n_transfer} of the {n_train} training images \
             (dataset.transfer_fraction {}); the teacher saw all of them",
            cfg.dataset.transfer_fraction
        ));
    }
    let sizes = (n_transfer, n_val, n_test);
    let done_before = |t: &StudentTrial| {
        let id = student_trial_id(cfg, t, &teacher_id);
        previous.iter().any(|r| r.trial_id == id)
    };
    // When every trial finished in an earlier run, the teacher is not needed either (its cache
    // may be gone): its row is kept like the others.
    let earlier_teacher = previous
        .iter()
        .find(|r| r.trial_id == teacher_id)
        .filter(|_| plan.iter().all(done_before));
    let (teacher_row, teacher_epochs, logits) = match earlier_teacher {
        Some(row) => {
            let row = with_sizes(row, (n_train, n_val, n_test));
            progress.finish_trial(0, &format!("{} (done before, skipped)", trial_line(&row)));
            let epochs: Vec<EpochRow> = previous_epochs
                .iter()
                .filter(|e| e.trial_id == teacher_id)
                .cloned()
                .collect();
            (row, epochs, None)
        }
        None => {
            let t = obtain_teacher(cfg, &data, &hash, device, &mut progress)?;
            let epochs = epoch_rows(&teacher_id, &t.epochs);
            (t.row, epochs, Some((t.logits, t.logits_file)))
        }
    };
    let mut book = Book {
        cfg,
        plan: &plan,
        teacher_id: &teacher_id,
        out: &out,
        input,
        classes,
        sizes,
        rows: vec![teacher_row],
        epochs: teacher_epochs,
        unfinished: 0,
    };
    kd_report::write_frames(&out, &book.rows, &book.epochs)?;

    // Trials finished in an earlier run of this OUT with the same resolved inputs are kept.
    let mut pending = Vec::new();
    for (index, trial) in plan.iter().enumerate() {
        let trial_id = student_trial_id(cfg, trial, &teacher_id);
        match previous.iter().find(|r| r.trial_id == trial_id) {
            Some(done) => {
                book.epochs.extend(
                    previous_epochs
                        .iter()
                        .filter(|e| e.trial_id == trial_id)
                        .cloned(),
                );
                if done.status != "ok" {
                    book.unfinished += 1;
                }
                let done = with_sizes(done, sizes);
                progress.finish_trial(0, &format!("{} (done before, skipped)", trial_line(&done)));
                book.rows.push(done);
            }
            None => pending.push(index),
        }
    }
    let skipped = plan.len() - pending.len();
    let workers = cfg.workers.min(pending.len()).max(1);
    let label = |t: &StudentTrial| format!("{} seed {}", t.kind.as_str(), t.seed);
    if pending.is_empty() {
        // Everything was trained before; only the frames and the report are rewritten.
    } else if workers == 1 {
        let (train_logits, _) = logits.expect("the teacher is obtained when a trial is pending");
        let ctx = TrialContext::new(cfg, data, &train_logits, device);
        for index in pending {
            let trial = &plan[index];
            progress.start_trial(0, &label(trial), trial.student.train.epochs as u64);
            let result = ctx.run_trial(trial, |log| progress.epoch(0, log));
            book.record(index, result, &mut progress, 0)?;
        }
    } else {
        drop(data);
        let (_, logits_file) = logits.expect("the teacher is obtained when a trial is pending");
        let specs: Vec<pool::WorkerSpec> = (0..workers)
            .map(|i| pool::WorkerSpec {
                device: device_label(devices[i % devices.len()]),
                threads: threads_per_worker(cfg, workers),
            })
            .collect();
        progress.note(&format!(
            "{} trials on {workers} workers: {}",
            pending.len(),
            specs
                .iter()
                .map(|s| format!("{} ({} threads)", s.device, s.threads))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let jobs: Vec<(usize, String)> = pending
            .iter()
            .map(|&i| (i, student_trial_id(cfg, &plan[i], &teacher_id)))
            .collect();
        let launch = pool::Launch {
            config: &config_file,
            logits: &logits_file,
            teacher_id: &teacher_id,
        };
        pool::run(&launch, &specs, &jobs, |event| match event {
            pool::Event::Started { slot, index } => {
                let t = &plan[index];
                progress.start_trial(slot, &label(t), t.student.train.epochs as u64);
                Ok(())
            }
            pool::Event::Epoch { slot, log } => {
                progress.epoch(slot, &log);
                Ok(())
            }
            pool::Event::Done {
                slot,
                index,
                result,
            } => book.record(index, result, &mut progress, slot),
        })?;
    }
    if skipped > 0 {
        progress.note(&format!(
            "{skipped} trial(s) were finished before and kept; --fresh re-runs them"
        ));
    }
    book.write()?;
    progress.finish();
    kd_report::write_report(&out, &cfg.name, &book.rows, &book.epochs)?;
    let (unfinished, trials) = (book.unfinished, book.rows);
    Ok(Summary {
        out,
        unfinished,
        trials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_is_stable_and_sensitive() {
        let a = content_hash(&("x", 1, [0.5f64]));
        assert_eq!(a, content_hash(&("x", 1, [0.5f64])));
        assert_eq!(a.len(), 12);
        assert_ne!(a, content_hash(&("x", 2, [0.5f64])));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }

    #[test]
    fn cuda_without_cuda_is_a_device_error() {
        if tch::Cuda::is_available() {
            return;
        }
        let e = select_device("cuda").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().starts_with("device: `cuda` was asked for"),
            "{e}"
        );
        assert!(matches!(select_device("auto").unwrap(), Device::Cpu));
        assert!(select_device("cuda:3").is_err());
    }
}
