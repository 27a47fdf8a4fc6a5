//! Checkpoint files: a run's [`Snapshot`] on disk, so that a trial killed or stopped in its
//! middle continues where its last checkpoint left it (see [`crate::train::snapshot`] for what
//! makes the continued numbers exact).
//!
//! One file per unit of work: `OUT/.checkpoints/<trial id>.ckpt` for a student alone,
//! `pack-<hash of its members' ids>.ckpt` for a pack, `$KD_CACHE_DIR/teachers/<hash>.ckpt`
//! for a teacher (beside its cache entry: one cached teacher serves many OUTs). Each is one
//! libtorch archive (the snapshot's tensors, and `meta`: [`Meta`] as YAML bytes) followed by
//! the SHA-256 of the archive ([`TRAILER`] and 64 hex digits), written to a temporary file,
//! flushed to the disk and renamed into place: one file and one rename, so a kill or a power
//! cut leaves the previous checkpoint or the new one, never a mismatched pair. It is removed
//! once the unit's record (or the cache entry) is written.
//!
//! A file is refused, with a message naming it, when its digest is missing or does not match,
//! when it cannot be parsed, when it is of another [`FORMAT`] (the format's version, not
//! kd-sweep's: a new commit does not throw away a 3-hour teacher) or of other trials. A refused
//! file is renamed `<file>.refused` (kept, never trusted) and the unit starts over.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::error::RunError;
use crate::train::snapshot::{Progress, Snapshot};

/// What precedes the archive's SHA-256 (64 hex digits) at the end of a checkpoint file.
const TRAILER: &[u8] = b"\nkd-sweep-sha256:";

/// `archive` with its digest after it.
fn seal(mut archive: Vec<u8>) -> Vec<u8> {
    let digest = hex::encode(Sha256::digest(&archive));
    archive.extend_from_slice(TRAILER);
    archive.extend_from_slice(digest.as_bytes());
    archive
}

/// The archive of a sealed file, when its digest says it is whole and unchanged.
fn unseal(bytes: &[u8]) -> Result<&[u8], String> {
    let tail = TRAILER.len() + 64;
    let n = bytes.len();
    if n < tail || &bytes[n - tail..n - 64] != TRAILER {
        return Err("it has no digest at its end (cut short, or not a kd-sweep checkpoint)".into());
    }
    let (archive, want) = (&bytes[..n - tail], &bytes[n - 64..]);
    let got = hex::encode(Sha256::digest(archive));
    if got.as_bytes() != want {
        return Err(format!(
            "its content hashes to {} but its digest says {}: the file was changed or damaged",
            &got[..16],
            String::from_utf8_lossy(&want[..16])
        ));
    }
    Ok(archive)
}

/// Write `bytes` to `file` through a temporary file flushed to the disk, a rename, and the
/// folder flushed, so the file is the old one or the new one after any crash.
fn write_durable(file: &Path, bytes: &[u8]) -> Result<(), RunError> {
    use std::io::Write as _;
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(crate::error::io_err(dir))?;
    let tmp = kd_report::temp_path(file);
    let done = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(crate::error::io_err(file)(e));
    }
    // The rename itself, on the disk.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The version of the file layout written. Raise it when the layout changes, and keep reading
/// the old ones ([`READS`]): a new commit must not throw away a three-hour teacher.
pub const FORMAT: u32 = 2;

/// The layouts read: 2, the archive with its SHA-256 at its end; 1, the archive alone with its
/// SHA-256 in `<file>.sha256` beside it (the first checkpoints, 2026-12-06).
pub const READS: [u32; 2] = [1, 2];

/// What a checkpoint says of itself, beside its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    /// The trials it belongs to: one, or a pack's members in order.
    pub ids: Vec<String>,
    /// The CPU model of the machine that wrote it.
    pub cpu: String,
    /// RFC 3339, UTC.
    pub written_at: String,
    pub progress: Progress,
}

/// Where and how often a process checkpoints its units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoints {
    /// The folder of the students' checkpoints (`OUT/.checkpoints`).
    pub dir: PathBuf,
    /// Time between checkpoints (at the end of the first epoch past it); none: never (but a
    /// stop still writes one).
    pub every: Option<Duration>,
}

pub use crate::config::every::{parse_every, DEFAULT_EVERY};

/// The folder of a sweep's student checkpoints: `OUT/.checkpoints`.
pub fn students_dir(out: &Path) -> PathBuf {
    out.join(".checkpoints")
}

/// The checkpoint file of a unit of trials `ids` under `dir`.
pub fn unit_file(dir: &Path, ids: &[&str]) -> PathBuf {
    match ids {
        [one] => dir.join(format!("{one}.ckpt")),
        _ => {
            let digest = hex::encode(Sha256::digest(ids.join("\n").as_bytes()));
            dir.join(format!("pack-{}.ckpt", &digest[..16]))
        }
    }
}

/// The checkpoint file of a unit of planned `trials` under `dir`.
pub fn unit_file_of(dir: &Path, trials: &[&crate::plan::PlannedTrial]) -> PathBuf {
    let ids: Vec<&str> = trials.iter().map(|t| t.id.as_str()).collect();
    unit_file(dir, &ids)
}

/// Write `snap` of the trials `ids` to `file`, atomically, with its digest.
pub fn save(file: &Path, ids: &[&str], snap: &Snapshot) -> Result<(), RunError> {
    let meta = Meta {
        format: FORMAT,
        ids: ids.iter().map(|s| s.to_string()).collect(),
        cpu: crate::env::cpu_model(),
        written_at: crate::env::now_rfc3339(),
        progress: snap.progress.clone(),
    };
    let yaml = serde_yaml::to_string(&meta).expect("checkpoint metadata serialises");
    let meta = Tensor::from_slice(yaml.as_bytes());
    let mut named: Vec<(&str, &Tensor)> = vec![("meta", &meta)];
    named.extend(snap.tensors.iter().map(|(n, t)| (n.as_str(), t)));
    let mut bytes = Vec::new();
    Tensor::save_multi_to_stream(&named, &mut bytes).map_err(|e| RunError::Checkpoint {
        file: file.to_path_buf(),
        reason: format!("cannot be written: {e}"),
    })?;
    write_durable(file, &seal(bytes))
}

/// [`save`] as a run's snapshot hook: whether it was written; a failure goes to `note` as a
/// warning (training goes on without it). The tests' kill hook runs after each write.
pub fn save_or_warn(file: &Path, ids: &[&str], snap: &Snapshot, note: impl FnOnce(String)) -> bool {
    match save(file, ids, snap) {
        Ok(()) => {
            abort_for_tests();
            true
        }
        Err(e) => {
            note(format!("warning: {e}; training goes on without it"));
            false
        }
    }
}

/// The snapshot in `file` for the trials `ids`, on `device`: none when there is no file; an
/// error naming the file and why when it cannot be trusted (the caller sets it aside with
/// [`refuse`] and starts over).
pub fn load(file: &Path, ids: &[&str], device: Device) -> Result<Option<(Meta, Snapshot)>, String> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("it cannot be read ({e})")),
    };
    let archive = match unseal(&bytes) {
        Ok(archive) => archive,
        Err(why) => format_1(file, &bytes).ok_or(why)?,
    };
    let (meta, tensors) = parse(archive, device)?;
    if !READS.contains(&meta.format) {
        return Err(format!(
            "it is of checkpoint format {}, and this kd-sweep reads formats {READS:?}",
            meta.format
        ));
    }
    if meta.ids != ids {
        return Err(format!(
            "it belongs to trial(s) {}, not {}",
            meta.ids.join(", "),
            ids.join(", ")
        ));
    }
    let snap = Snapshot {
        progress: meta.progress.clone(),
        tensors,
    };
    Ok(Some((meta, snap)))
}

/// A format 1 file's archive: all of `bytes`, when `<file>.sha256` beside it holds their
/// SHA-256.
fn format_1<'b>(file: &Path, bytes: &'b [u8]) -> Option<&'b [u8]> {
    let want = std::fs::read_to_string(digest_file(file)).ok()?;
    (hex::encode(Sha256::digest(bytes)) == want.trim()).then_some(bytes)
}

/// Where a format 1 file kept its SHA-256.
fn digest_file(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".sha256");
    PathBuf::from(name)
}

/// The metadata and tensors of a checkpoint's `archive`, on `device`.
fn parse(archive: &[u8], device: Device) -> Result<(Meta, Vec<(String, Tensor)>), String> {
    let mut tensors = Tensor::load_multi_from_stream_with_device(Cursor::new(archive), device)
        .map_err(|e| format!("it is not a libtorch archive ({e})"))?;
    let at = tensors
        .iter()
        .position(|(n, _)| n == "meta")
        .ok_or("it has no `meta` tensor")?;
    let (_, meta) = tensors.swap_remove(at);
    let meta = meta.to_device(Device::Cpu).to_kind(Kind::Uint8);
    let mut yaml = vec![0u8; meta.numel()];
    meta.copy_data_u8(&mut yaml, meta.numel());
    let meta: Meta =
        serde_yaml::from_slice(&yaml).map_err(|e| format!("its metadata cannot be read ({e})"))?;
    Ok((meta, tensors))
}

/// Remove every checkpoint in `dir` that holds one of `ids` (`--fresh` of a shard: also packs
/// formed in an earlier run, named after other members); unreadable ones stay.
pub fn remove_holding(dir: &Path, ids: &std::collections::HashSet<&str>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "ckpt") {
            continue;
        }
        let meta = std::fs::read(&path).ok().and_then(|b| {
            let archive = unseal(&b).ok().or_else(|| format_1(&path, &b))?;
            parse(archive, Device::Cpu).ok().map(|(m, _)| m)
        });
        if meta.is_some_and(|m| m.ids.iter().any(|i| ids.contains(i.as_str()))) {
            remove(&path);
        }
    }
}

/// Set aside the checkpoint `file` that cannot be used (`<file>.refused`, replacing an older
/// one), and say so.
pub fn refuse(file: &Path, why: &str) -> String {
    let mut aside = file.as_os_str().to_os_string();
    aside.push(".refused");
    let _ = std::fs::rename(file, &aside);
    let _ = std::fs::remove_file(digest_file(file));
    format!(
        "warning: checkpoint {} cannot be used: {why}; set aside as {}, the trial starts over",
        file.display(),
        PathBuf::from(aside).display()
    )
}

/// Remove the checkpoint `file` (and a format 1 file's digest beside it): its unit is done.
pub fn remove(file: &Path) {
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(digest_file(file));
}

/// Remove every checkpoint left in `dir` (units that no longer form: a pack whose members
/// finished in another run, a plan edited), and `dir` when it is empty; the refused files stay.
/// For a whole sweep that ended with nothing in flight.
pub fn clear_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".ckpt") || name.ends_with(".ckpt.sha256") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Fault injection for the tests: with `KD_TEST_ABORT_AFTER_CHECKPOINTS=N`, the process ends
/// with exit status 137 once it has written N checkpoints, as a `kill -9` would end it there
/// (a deterministic kill for the kill-and-continue tests).
pub fn abort_for_tests() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static DONE: AtomicUsize = AtomicUsize::new(0);
    let Some(n) = std::env::var("KD_TEST_ABORT_AFTER_CHECKPOINTS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    if DONE.fetch_add(1, Ordering::SeqCst) + 1 >= n {
        eprintln!("KD_TEST_ABORT_AFTER_CHECKPOINTS={n}: ending the process");
        std::process::exit(137);
    }
}

/// What stderr says when `what` continues from a checkpoint that another CPU model wrote (the
/// execution class, so the id, is the same; the last digits from here on may not be).
pub fn other_cpu_note(what: &str, meta: &Meta) -> Option<String> {
    (!crate::env::is_this_cpu(&meta.cpu)).then(|| {
        format!(
            "{what}: continuing from a checkpoint written on another CPU model of the same \
             execution class ({}; this machine: {}); its numbers from here on may differ in the \
             last digits from an uninterrupted run's, and its record says where it continued",
            meta.cpu,
            crate::env::cpu_model()
        )
    })
}

/// How a continued run's record says where it continued: the driver's note, and the CPU that
/// wrote the checkpoint when it is not this one.
pub fn resumed_note(note: &str, meta: &Meta) -> String {
    let here = crate::env::cpu_model();
    if crate::env::is_this_cpu(&meta.cpu) {
        note.to_string()
    } else {
        format!(
            "{note}, from a checkpoint written on {} (this machine: {here})",
            meta.cpu
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress() -> Progress {
        Progress {
            epoch: 3,
            batch: 2,
            step: 17,
            seconds: 2.5,
            epoch_seconds: 0.5,
            logs: vec![vec![]],
            best_val: vec![f64::NEG_INFINITY],
            alive: vec![true],
            message: vec![None],
            kept: vec![Some(2)],
            lr: 0.01,
        }
    }

    fn bits(t: &Tensor) -> Tensor {
        match t.kind() {
            Kind::BFloat16 => t.view_dtype(Kind::Int16),
            Kind::Float => t.view_dtype(Kind::Int),
            _ => t.shallow_clone(),
        }
    }

    fn snapshot() -> Snapshot {
        let cl = Tensor::arange(24, (Kind::Float, Device::Cpu)).view([1, 2, 3, 4]);
        kd_model_zoo::channels_last_(&cl);
        Snapshot {
            progress: progress(),
            tensors: vec![
                (
                    "model/fc.weight".into(),
                    Tensor::from_slice(&[1.5f32, f32::NAN, -0.0]).to_kind(Kind::BFloat16),
                ),
                ("model/conv.weight".into(), cl),
                ("opt/step".into(), Tensor::from(17i64)),
            ],
        }
    }

    #[test]
    fn a_checkpoint_comes_back_as_written_and_a_damaged_one_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = unit_file(dir.path(), &["abc"]);
        assert_eq!(file, dir.path().join("abc.ckpt"));
        save(&file, &["abc"], &snapshot()).unwrap();
        let (meta, back) = load(&file, &["abc"], Device::Cpu).unwrap().unwrap();
        assert_eq!(meta.format, FORMAT);
        assert_eq!(back.progress, progress());
        let got: std::collections::HashMap<_, _> = back.tensors.into_iter().collect();
        for (name, t) in snapshot().tensors {
            let g = &got[&name];
            assert_eq!(g.kind(), t.kind(), "{name}");
            // NaN == NaN here: compare the bits.
            assert!(bits(g).equal(&bits(&t)), "{name}");
        }
        // Another trial's.
        let err = load(&file, &["xyz"], Device::Cpu).unwrap_err();
        assert!(err.contains("belongs to trial(s) abc, not xyz"), "{err}");
        // One byte changed (of the archive, before its digest).
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 100;
        bytes[last] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        let err = load(&file, &["abc"], Device::Cpu).unwrap_err();
        assert!(err.contains("changed or damaged"), "{err}");
        let note = refuse(&file, &err);
        assert!(note.contains(&file.display().to_string()) && note.contains("starts over"));
        assert!(!file.exists() && dir.path().join("abc.ckpt.refused").exists());
        assert!(load(&file, &["abc"], Device::Cpu).unwrap().is_none());
        // No digest: an archive alone, or one cut short.
        let mut archive = Vec::new();
        Tensor::save_multi_to_stream(&[("meta", Tensor::from(1i64))], &mut archive).unwrap();
        for bytes in [&archive[..], &bytes[..bytes.len() - 10]] {
            std::fs::write(&file, bytes).unwrap();
            let err = load(&file, &["abc"], Device::Cpu).unwrap_err();
            assert!(err.contains("no digest at its end"), "{err}");
        }
    }

    /// A format 1 file (the archive alone, its SHA-256 beside it in `<file>.sha256`) is still
    /// read; with a digest that does not match, refused.
    #[test]
    fn a_format_1_checkpoint_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = unit_file(dir.path(), &["old"]);
        let meta = Meta {
            format: 1,
            ids: vec!["old".into()],
            cpu: "x".into(),
            written_at: "now".into(),
            progress: progress(),
        };
        let yaml = serde_yaml::to_string(&meta).unwrap();
        let mut bytes = Vec::new();
        let tensors = [
            ("meta", Tensor::from_slice(yaml.as_bytes())),
            ("opt/step", Tensor::from(17i64)),
        ];
        Tensor::save_multi_to_stream(&tensors, &mut bytes).unwrap();
        std::fs::write(&file, &bytes).unwrap();
        std::fs::write(digest_file(&file), hex::encode(Sha256::digest(&bytes))).unwrap();
        let (got, snap) = load(&file, &["old"], Device::Cpu).unwrap().unwrap();
        assert_eq!((got.format, snap.progress), (1, progress()));
        std::fs::write(digest_file(&file), "0".repeat(64)).unwrap();
        let err = load(&file, &["old"], Device::Cpu).unwrap_err();
        assert!(err.contains("no digest at its end"), "{err}");
        remove(&file);
        assert!(!file.exists() && !digest_file(&file).exists());
    }

    #[test]
    fn another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = unit_file(dir.path(), &["a", "b"]);
        assert!(file
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("pack-"));
        let meta = Meta {
            format: FORMAT + 1,
            ids: vec!["a".into(), "b".into()],
            cpu: "x".into(),
            written_at: "now".into(),
            progress: progress(),
        };
        let yaml = serde_yaml::to_string(&meta).unwrap();
        let mut bytes = Vec::new();
        Tensor::save_multi_to_stream(&[("meta", Tensor::from_slice(yaml.as_bytes()))], &mut bytes)
            .unwrap();
        write_durable(&file, &seal(bytes)).unwrap();
        let err = load(&file, &["a", "b"], Device::Cpu).unwrap_err();
        assert!(err.contains(&format!("format {}", FORMAT + 1)), "{err}");
        assert!(err.contains("reads formats [1, 2]"), "{err}");
    }
}
