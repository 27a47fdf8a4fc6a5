//! TensorBoard event files, one run per trial: `OUT/tensorboard/<trial_id>/`, so
//! `tensorboard --logdir OUT/tensorboard` compares every trial's curves and, in its HParams tab,
//! their settings.
//!
//! Per epoch (step = epoch, 1-based): `loss/train` (the weighted total), `loss/soft` (the
//! unscaled soft term, KD trials), `loss/hard`, `accuracy/train` (running, training mode),
//! `accuracy/val`, `accuracy/test`, `lr`. At the end: `result/test_acc`, `result/val_acc`,
//! `result/test_errors`, `result/teacher_agreement` at the last epoch, and the hparams plugin's
//! session start (the trial's settings: kind, model, seed, lr, the KD weights and every swept key)
//! and end (its status).
//!
//! While a trial runs, its epochs are appended to `events.out.tfevents.<secs>.kd-live` (so a
//! long run can be watched); when it finishes, the whole run is written to
//! `events.out.tfevents.<secs>.kd` (atomically) and the live file removed. A trial started
//! again (resume after a stop, `--fresh`) starts its directory afresh; a trial kept from an
//! earlier run gets its file written from its stored epochs when it has none.
//!
//! The format: TFRecord framing (little-endian length, masked CRC-32C of the length, the
//! serialized `Event`, masked CRC-32C of it) around `tensorflow.Event` protos, encoded with
//! `prost` from the message definitions below (field numbers of TensorFlow's `event.proto`,
//! `summary.proto`, `tensor.proto` and TensorBoard's `plugins/hparams/plugin_data.proto`).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use kd_report::{EpochRecord, Kind, Status, TrialRecord, Value as Cell};
use prost::Message;

use super::{Opening, Output};

/// The protos, with only the fields kd-sweep writes.
mod proto {
    use std::collections::BTreeMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(double, tag = "1")]
        pub wall_time: f64,
        #[prost(int64, tag = "2")]
        pub step: i64,
        #[prost(oneof = "What", tags = "3, 5")]
        pub what: Option<What>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        #[prost(string, tag = "3")]
        FileVersion(String),
        #[prost(message, tag = "5")]
        Summary(Summary),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<Value>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(string, tag = "1")]
        pub tag: String,
        #[prost(message, optional, tag = "9")]
        pub metadata: Option<SummaryMetadata>,
        #[prost(oneof = "ValueKind", tags = "2, 8")]
        pub kind: Option<ValueKind>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum ValueKind {
        #[prost(float, tag = "2")]
        SimpleValue(f32),
        #[prost(message, tag = "8")]
        Tensor(TensorProto),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SummaryMetadata {
        #[prost(message, optional, tag = "1")]
        pub plugin_data: Option<PluginData>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PluginData {
        #[prost(string, tag = "1")]
        pub plugin_name: String,
        #[prost(bytes = "vec", tag = "2")]
        pub content: Vec<u8>,
    }

    /// An empty float vector: what TensorBoard's hparams summaries carry (`NULL_TENSOR`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int32, tag = "1")]
        pub dtype: i32,
        #[prost(message, optional, tag = "2")]
        pub tensor_shape: Option<TensorShape>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShape {
        #[prost(message, repeated, tag = "2")]
        pub dim: Vec<Dim>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        #[prost(int64, tag = "1")]
        pub size: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HParamsPluginData {
        #[prost(int32, tag = "1")]
        pub version: i32,
        #[prost(oneof = "Session", tags = "3, 4")]
        pub data: Option<Session>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Session {
        #[prost(message, tag = "3")]
        Start(SessionStartInfo),
        #[prost(message, tag = "4")]
        End(SessionEndInfo),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SessionStartInfo {
        #[prost(btree_map = "string, message", tag = "1")]
        pub hparams: BTreeMap<String, HValue>,
        #[prost(string, tag = "4")]
        pub group_name: String,
        #[prost(double, tag = "5")]
        pub start_time_secs: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SessionEndInfo {
        /// `tensorboard.hparams.Status`: 1 success, 2 failure.
        #[prost(int32, tag = "1")]
        pub status: i32,
        #[prost(double, tag = "2")]
        pub end_time_secs: f64,
    }

    /// `google.protobuf.Value`, the kinds hparams use.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HValue {
        #[prost(oneof = "HKind", tags = "2, 3, 4")]
        pub kind: Option<HKind>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum HKind {
        #[prost(double, tag = "2")]
        Number(f64),
        #[prost(string, tag = "3")]
        Text(String),
        #[prost(bool, tag = "4")]
        Flag(bool),
    }
}

use proto::{Event, HKind, HValue, Session, Summary, What};

fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
pub(crate) fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn event(step: i64, what: What) -> Vec<u8> {
    frame(
        &Event {
            wall_time: now(),
            step,
            what: Some(what),
        }
        .encode_to_vec(),
    )
}

fn scalars(step: i64, values: &[(&str, Option<f64>)]) -> Vec<u8> {
    let value = values
        .iter()
        .filter_map(|(tag, v)| {
            v.filter(|v| v.is_finite()).map(|v| proto::Value {
                tag: (*tag).into(),
                metadata: None,
                kind: Some(proto::ValueKind::SimpleValue(v as f32)),
            })
        })
        .collect();
    event(step, What::Summary(Summary { value }))
}

fn file_version() -> Vec<u8> {
    event(0, What::FileVersion("brain.Event:2".into()))
}

fn epoch_events(log: &EpochRecord) -> Vec<u8> {
    scalars(
        i64::from(log.epoch),
        &[
            ("loss/train", Some(log.train_loss)),
            ("loss/soft", log.soft_loss),
            ("loss/hard", Some(log.hard_loss)),
            ("accuracy/train", Some(log.train_acc)),
            ("accuracy/val", log.val_acc),
            ("accuracy/test", log.test_acc),
            ("lr", Some(log.lr)),
        ],
    )
}

/// The trial's settings as hparams: what it is, and what its cell of the grid chose.
pub(crate) fn hparams(r: &TrialRecord) -> BTreeMap<String, HValue> {
    let text = |s: &str| HValue {
        kind: Some(HKind::Text(s.into())),
    };
    let number = |x: f64| HValue {
        kind: Some(HKind::Number(x)),
    };
    let mut h = BTreeMap::new();
    h.insert("kind".into(), text(r.kind.as_str()));
    h.insert("model".into(), text(&format!("{} {}", r.arch, r.hidden)));
    h.insert("seed".into(), number(r.seed as f64));
    h.insert("lr".into(), number(r.lr));
    if r.kind == Kind::Kd {
        for (k, v) in [
            ("temperature", r.temperature),
            ("alpha", r.alpha),
            ("beta", r.beta),
        ] {
            if let Some(v) = v {
                h.insert(k.into(), number(v));
            }
        }
        if let Some(s) = &r.soft_loss {
            h.insert("soft_loss".into(), text(s));
        }
    }
    for (k, v) in &r.swept {
        let v = match v {
            Cell::Null => continue,
            Cell::Bool(b) => HValue {
                kind: Some(HKind::Flag(*b)),
            },
            Cell::Int(i) => number(*i as f64),
            Cell::Float(x) => number(*x),
            Cell::Str(s) => text(s),
        };
        h.insert(k.clone(), v);
    }
    h
}

fn hparams_event(session: Session) -> Vec<u8> {
    let content = proto::HParamsPluginData {
        version: 0,
        data: Some(session.clone()),
    }
    .encode_to_vec();
    let tag = match session {
        Session::Start(_) => "_hparams_/session_start_info",
        Session::End(_) => "_hparams_/session_end_info",
    };
    let value = proto::Value {
        tag: tag.into(),
        metadata: Some(proto::SummaryMetadata {
            plugin_data: Some(proto::PluginData {
                plugin_name: "hparams".into(),
                content,
            }),
        }),
        kind: Some(proto::ValueKind::Tensor(proto::TensorProto {
            dtype: 1, // DT_FLOAT
            tensor_shape: Some(proto::TensorShape {
                dim: vec![proto::Dim { size: 0 }],
            }),
        })),
    };
    event(0, What::Summary(Summary { value: vec![value] }))
}

/// A finished trial's whole run: file version, hparams, its epochs, its results.
pub(crate) fn run_events(record: &TrialRecord, epochs: &[EpochRecord]) -> Vec<u8> {
    let mut out = file_version();
    out.extend(hparams_event(Session::Start(proto::SessionStartInfo {
        hparams: hparams(record),
        group_name: String::new(),
        start_time_secs: now() - record.wall_s,
    })));
    for log in epochs {
        out.extend(epoch_events(log));
    }
    let last = epochs.iter().map(|e| i64::from(e.epoch)).max().unwrap_or(0);
    out.extend(scalars(
        last,
        &[
            ("result/test_acc", record.test_acc),
            ("result/val_acc", record.val_acc),
            ("result/test_errors", record.test_errors.map(|n| n as f64)),
            ("result/teacher_agreement", record.teacher_agreement),
        ],
    ));
    out.extend(hparams_event(Session::End(proto::SessionEndInfo {
        status: if record.status == Status::Ok { 1 } else { 2 },
        end_time_secs: now(),
    })));
    out
}

/// The TensorBoard output, where `kd sweep --tensorboard` asks for it.
pub(crate) fn open(o: &Opening) -> Option<Box<dyn Output>> {
    o.tensorboard
        .then(|| Box::new(TensorBoard::new(o.out.join("tensorboard"))) as _)
}

/// The TensorBoard output of one sweep.
pub(crate) struct TensorBoard {
    dir: PathBuf,
    /// The live file of each running trial.
    live: HashMap<String, (PathBuf, std::fs::File)>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

impl TensorBoard {
    /// Runs under `dir` (`OUT/tensorboard`).
    pub(crate) fn new(dir: PathBuf) -> Self {
        TensorBoard {
            dir,
            live: HashMap::new(),
        }
    }

    fn run_dir(&self, trial_id: &str) -> PathBuf {
        self.dir.join(trial_id)
    }

    /// Whether `dir` holds a finished run's file.
    fn has_final(dir: &Path) -> bool {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".kd"))
        })
    }
}

impl Output for TensorBoard {
    fn name(&self) -> &'static str {
        "TensorBoard"
    }

    fn epoch(&mut self, _slot: usize, log: &EpochRecord) -> Result<(), String> {
        if !self.live.contains_key(&log.trial_id) {
            let dir = self.run_dir(&log.trial_id);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let path = dir.join(format!("events.out.tfevents.{}.kd-live", now() as u64));
            let mut f = std::fs::File::create(&path).map_err(io(&path))?;
            f.write_all(&file_version()).map_err(io(&path))?;
            self.live.insert(log.trial_id.clone(), (path, f));
        }
        let (path, f) = self.live.get_mut(&log.trial_id).expect("inserted above");
        f.write_all(&epoch_events(log))
            .and_then(|()| f.flush())
            .map_err(io(path))
    }

    fn finished(
        &mut self,
        _slot: usize,
        record: &TrialRecord,
        epochs: &[EpochRecord],
        kept: bool,
    ) -> Result<(), String> {
        let dir = self.run_dir(&record.trial_id);
        if kept && Self::has_final(&dir) {
            return Ok(());
        }
        let live = self.live.remove(&record.trial_id);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(format!("events.out.tfevents.{}.kd", now() as u64));
        kd_report::write_atomic(&path, &run_events(record, epochs)).map_err(|e| e.to_string())?;
        // What an earlier attempt or this one's live file left beside it.
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let p = entry.path();
            if p != path {
                std::fs::remove_file(&p).map_err(io(&p))?;
            }
        }
        drop(live);
        Ok(())
    }
}
