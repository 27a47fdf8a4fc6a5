//! Cache files that cannot be trusted blindly: each is written through a temporary file of this
//! process's own and a rename, with the SHA-256 of its content in `<file>.sha256` beside it,
//! checked on every load (the teacher cache's weights, training log and logits).

use std::path::{Path, PathBuf};

use crate::data::file_digest;
use crate::error::{io_err, torch_err, RunError};

/// Where the SHA-256 of cache file `file` is kept: `<file>.sha256`.
fn digest_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".sha256");
    PathBuf::from(name)
}

/// Save a tensor store through a temporary file and a rename, its digest beside it (written
/// first, from the temporary file, so the pair is never older than the data).
pub(crate) fn save_atomic(
    file: &Path,
    save: impl FnOnce(&Path) -> Result<(), tch::TchError>,
) -> Result<(), RunError> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = kd_report::temp_path(file);
    let done = save(&tmp)
        .map_err(torch_err(&tmp))
        .and_then(|()| record_digest(&tmp, file))
        .and_then(|()| std::fs::rename(&tmp, file).map_err(io_err(file)));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Write `bytes` to cache file `file` atomically, with its digest beside it.
pub(crate) fn write_verified(file: &Path, bytes: &[u8]) -> Result<(), RunError> {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(bytes));
    kd_report::write_atomic(&digest_path(file), digest.as_bytes())?;
    Ok(kd_report::write_atomic(file, bytes)?)
}

/// Record the digest of `content` (the file itself, or the temporary file about to become it)
/// as that of cache file `file`.
pub(crate) fn record_digest(content: &Path, file: &Path) -> Result<(), RunError> {
    let digest = file_digest(content)?;
    Ok(kd_report::write_atomic(
        &digest_path(file),
        digest.as_bytes(),
    )?)
}

/// What a cache file's digest says of it.
#[derive(Debug, PartialEq)]
pub(crate) enum Check {
    /// Its content hashes to its digest.
    Verified,
    /// It has no digest: an older kd-sweep's cache, before cache files carried one.
    Legacy,
    /// Why it cannot be trusted: its digest is unreadable, or its content does not hash to it.
    Bad(String),
}

pub(crate) fn check(file: &Path) -> Check {
    let sidecar = digest_path(file);
    if !sidecar.exists() {
        return Check::Legacy;
    }
    let want = match std::fs::read_to_string(&sidecar) {
        Ok(d) => d.trim().to_string(),
        Err(e) => {
            return Check::Bad(format!(
                "its digest {} cannot be read ({e})",
                sidecar.display()
            ))
        }
    };
    match file_digest(file) {
        Ok(got) if got == want => Check::Verified,
        Ok(got) => Check::Bad(format!(
            "its content hashes to {} but {} says {}: the file was changed or damaged",
            &got[..16],
            sidecar.display(),
            want.get(..16).unwrap_or(&want)
        )),
        Err(e) => Check::Bad(e.to_string()),
    }
}

/// Why cache file `file` cannot be trusted, if it cannot: its digest file is missing (an older
/// kd-sweep's cache) or unreadable, or its content does not hash to it.
pub(crate) fn unverified(file: &Path) -> Option<String> {
    match check(file) {
        Check::Verified => None,
        Check::Legacy => Some(format!(
            "its digest {} cannot be read (it has none)",
            digest_path(file).display()
        )),
        Check::Bad(why) => Some(why),
    }
}
