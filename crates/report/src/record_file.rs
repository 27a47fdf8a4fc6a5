//! A record file's integrity: its first line holds the SHA-256 of the YAML below it, checked on
//! every read together with the record's own arithmetic; a file that fails is moved to
//! `OUT/quarantine/`, never deleted. [`crate::store`] reads and writes the files through this.

use std::path::{Path, PathBuf};

use crate::store::TrialFile;

/// The first line of a record file: this, then the SHA-256 (hex) of the text after the line.
const DIGEST_LINE: &str = "# sha256: ";

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// `text` (a record's YAML) with its digest line before it.
pub(crate) fn stamped(text: &str) -> String {
    format!("{DIGEST_LINE}{}\n{text}", sha256_hex(text))
}

/// A record file as read: whole and checked, or why it cannot be used.
pub(crate) enum RecordRead {
    /// Its digest and its numbers agree (`stamped` false: written before records had digests,
    /// so only its numbers were checked).
    Good { file: Box<TrialFile>, stamped: bool },
    /// It does not read as a record.
    Unreadable(String),
    /// It reads, but fails its digest or contradicts itself.
    Tampered(String),
}

pub(crate) fn read_record(path: &Path) -> RecordRead {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return RecordRead::Unreadable(e.to_string()),
    };
    let (body, stamped) = match text.strip_prefix(DIGEST_LINE) {
        Some(rest) => {
            let (digest, body) = rest.split_once('\n').unwrap_or((rest, ""));
            if sha256_hex(body) != digest.trim() {
                return RecordRead::Tampered(
                    "its content does not match its digest (edited or damaged)".into(),
                );
            }
            (body, true)
        }
        None => (text.as_str(), false),
    };
    match serde_yaml::from_str::<TrialFile>(body) {
        Err(e) => RecordRead::Unreadable(e.to_string()),
        Ok(f) => match f.record.contradiction() {
            Some(why) => RecordRead::Tampered(format!("its numbers contradict each other: {why}")),
            None => RecordRead::Good {
                file: Box::new(f),
                stamped,
            },
        },
    }
}

/// The folder damaged or tampered record files are moved to (`OUT/quarantine/`).
pub fn quarantine_dir(out: &Path) -> PathBuf {
    out.join("quarantine")
}

/// Move `path` into `OUT/quarantine/` under its name (`NAME.2`, ... beside earlier ones); the
/// path it went to, or why it could not be moved.
pub(crate) fn quarantine(out: &Path, path: &Path) -> std::result::Result<PathBuf, String> {
    let dir = quarantine_dir(out);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let target = (1..)
        .map(|n| match n {
            1 => dir.join(&*name),
            n => dir.join(format!("{name}.{n}")),
        })
        .find(|t| !t.exists())
        .expect("a free name");
    std::fs::rename(path, &target).map_err(|e| e.to_string())?;
    Ok(target)
}
