//! What identifies a dataset's content: a SHA-256 over the four files actually read, so a trial
//! id changes when a file is rewritten in place and stays when another folder holds the same
//! bytes. Digests are cached by path, size, modification time, status-change time (ctime) and
//! inode (a JSON file the caller names), so a sweep and its workers hash each file once. The
//! ctime and inode are what a user cannot set back: `touch -r`, `cp -p`, rsync and tar restore
//! an mtime, but rewriting a file in place moves its ctime, and replacing it gives another inode
//! (git's index keys on them for the same reason).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{find_file, DataError, Result};

/// One cached file digest: valid while the file keeps its size, modification time, ctime and
/// inode (an entry of an older kd-sweep, without the last two, never matches: hashed again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    mtime_ns: u128,
    #[serde(default)]
    ctime_ns: u128,
    #[serde(default)]
    inode: u64,
    sha256: String,
}

impl Entry {
    fn stat(&self) -> Stat {
        Stat {
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            inode: self.inode,
        }
    }
}

/// What a file's cached digest is keyed by.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    size: u64,
    mtime_ns: u128,
    ctime_ns: u128,
    inode: u64,
}

type Cache = BTreeMap<PathBuf, Entry>;

fn stat(path: &Path) -> Result<Stat> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::Io {
        file: path.to_path_buf(),
        source: e,
    })?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let (ctime_ns, inode) = change_time_and_inode(&meta);
    Ok(Stat {
        size: meta.len(),
        mtime_ns: mtime,
        ctime_ns,
        inode,
    })
}

#[cfg(unix)]
fn change_time_and_inode(meta: &std::fs::Metadata) -> (u128, u64) {
    use std::os::unix::fs::MetadataExt;
    let ns = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
    (ns.max(0) as u128, meta.ino())
}

#[cfg(not(unix))]
fn change_time_and_inode(_meta: &std::fs::Metadata) -> (u128, u64) {
    (0, 0)
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Io {
        file: path.to_path_buf(),
        source: e,
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The cache as written: its entries and the SHA-256 of their JSON, checked on every read.
#[derive(Serialize, Deserialize)]
struct CacheFile {
    sha256: String,
    entries: Cache,
}

fn entries_digest(entries: &Cache) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(entries).expect("the cache serialises"),
    ))
}

/// The cached digests, when the file matches its own digest; else none (every data file is
/// hashed again), with a warning when the file is there but changed, damaged or of an older
/// kd-sweep.
fn read_cache(file: &Path) -> Cache {
    let Ok(bytes) = std::fs::read(file) else {
        return Cache::default();
    };
    match serde_json::from_slice::<CacheFile>(&bytes) {
        Ok(c) if entries_digest(&c.entries) == c.sha256 => c.entries,
        read => {
            let why = match read {
                Ok(_) => "its entries do not match its digest (changed or damaged)".to_string(),
                Err(e) => format!("unreadable ({e}; damaged, or an older kd-sweep's)"),
            };
            eprintln!(
                "warning: {}: {why}; hashing the data files again",
                file.display()
            );
            Cache::default()
        }
    }
}

/// Write the cache through a temporary file of this process's (and call's) own and a rename, so
/// concurrent sweeps never see half a file (the last writer wins; every entry is still valid).
fn write_cache(file: &Path, cache: &Cache) {
    let Some(dir) = file.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = file.with_extension(format!("{}.{n}.tmp", std::process::id()));
    let json = serde_json::to_vec_pretty(&CacheFile {
        sha256: entries_digest(cache),
        entries: cache.clone(),
    })
    .expect("the cache serialises");
    if std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, file))
        .is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The fingerprint of the dataset in `dir`: SHA-256 over the name and digest of each of its
/// `files` (its format's [`crate::Format::files`], in that order; 16 hex digits). `cache`, when
/// given, is a JSON file of per-file digests keyed by canonical path, size, modification time,
/// ctime and inode; it is read, completed and rewritten.
pub fn fingerprint(dir: &Path, files: &[&str], cache: Option<&Path>) -> Result<String> {
    let files: Vec<PathBuf> = files
        .iter()
        .map(|stem| {
            find_file(dir, stem).ok_or_else(|| DataError::Missing {
                file: dir.join(format!("{stem}.gz")),
                hint: "the dataset folder lost a file".into(),
            })
        })
        .collect::<Result<_>>()?;
    let mut known = cache.map(read_cache).unwrap_or_default();
    let keys: Vec<PathBuf> = files
        .iter()
        .map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()))
        .collect();
    let stats = keys.iter().map(|k| stat(k)).collect::<Result<Vec<_>>>()?;
    let digests: Vec<String> = keys
        .par_iter()
        .zip(&stats)
        .map(|(key, stat)| match known.get(key) {
            Some(e) if e.stat() == *stat => Ok(e.sha256.clone()),
            _ => sha256_file(key),
        })
        .collect::<Result<_>>()?;
    let mut changed = false;
    for ((key, &stat), sha256) in keys.iter().zip(&stats).zip(&digests) {
        let entry = Entry {
            size: stat.size,
            mtime_ns: stat.mtime_ns,
            ctime_ns: stat.ctime_ns,
            inode: stat.inode,
            sha256: sha256.clone(),
        };
        if known.get(key) != Some(&entry) {
            known.insert(key.clone(), entry);
            changed = true;
        }
    }
    if let (Some(file), true) = (cache, changed) {
        write_cache(file, &known);
    }
    let mut all = Sha256::new();
    for (file, digest) in files.iter().zip(&digests) {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        all.update(format!("{name} {digest}\n").as_bytes());
    }
    Ok(hex::encode(&all.finalize()[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::testing::write_idx_set;
    use crate::FILE_STEMS;

    #[test]
    fn same_bytes_same_fingerprint_other_bytes_another() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        write_idx_set(&a, 8, 8, 40, 10, true);
        write_idx_set(&b, 8, 8, 40, 10, true);
        let cache = root.path().join("fingerprints.json");
        let fa = fingerprint(&a, &FILE_STEMS, Some(&cache)).unwrap();
        assert_eq!(fa.len(), 16);
        assert_eq!(
            fa,
            fingerprint(&b, &FILE_STEMS, None).unwrap(),
            "a copy is the same data"
        );
        assert!(std::fs::read_to_string(&cache).unwrap().contains("sha256"));
        // Rewritten in place (another image count): another fingerprint, though cached.
        write_idx_set(&a, 8, 8, 41, 10, true);
        assert_ne!(fa, fingerprint(&a, &FILE_STEMS, Some(&cache)).unwrap());
    }

    #[test]
    fn the_cache_is_keyed_by_size_mtime_ctime_and_inode() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("a");
        write_idx_set(&a, 8, 8, 40, 10, false);
        let cache = root.path().join("fp.json");
        let first = fingerprint(&a, &FILE_STEMS, Some(&cache)).unwrap();
        // Poison the cached digests (as kd writes them, digest and all): a hit must come from
        // the cache, not from rehashing.
        let mut c = read_cache(&cache);
        assert_eq!(c.len(), 4);
        for e in c.values_mut() {
            e.sha256 = "0".repeat(64);
        }
        write_cache(&cache, &c);
        let poisoned = fingerprint(&a, &FILE_STEMS, Some(&cache)).unwrap();
        assert_ne!(poisoned, first, "unchanged files are read from the cache");
        // Touch one file (a new mtime): it is hashed again.
        let f = a.join(FILE_STEMS[0]);
        let t = std::fs::File::options().write(true).open(&f).unwrap();
        t.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        let after = fingerprint(&a, &FILE_STEMS, Some(&cache)).unwrap();
        assert_ne!(after, poisoned);
    }

    /// Issue 17: cache content is checked on load. A cache edited (or damaged) by hand, without
    /// its digest, is not used: the files are hashed again.
    #[test]
    fn a_cache_that_does_not_match_its_digest_is_not_used() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("a");
        write_idx_set(&a, 8, 8, 40, 10, false);
        let cache = root.path().join("fp.json");
        let first = fingerprint(&a, &FILE_STEMS, Some(&cache)).unwrap();
        let text = std::fs::read_to_string(&cache).unwrap();
        let digest = text.split('"').find(|s| s.len() == 64).unwrap().to_string();
        let real = read_cache(&cache).values().next().unwrap().sha256.clone();
        assert_ne!(digest, real, "the file's own digest comes first");
        std::fs::write(&cache, text.replace(&real, &"0".repeat(64))).unwrap();
        assert!(read_cache(&cache).is_empty());
        assert_eq!(fingerprint(&a, &FILE_STEMS, Some(&cache)).unwrap(), first);
        std::fs::write(&cache, b"{ damaged").unwrap();
        assert_eq!(fingerprint(&a, &FILE_STEMS, Some(&cache)).unwrap(), first);
        assert_eq!(read_cache(&cache).len(), 4, "rewritten whole");
    }

    /// Issue 32: a training file rewritten in place with the same size, its old mtime set back
    /// (`touch -r`, `cp -p`), kept its old fingerprint: every trial was reused.
    #[test]
    fn a_file_rewritten_with_its_old_size_and_mtime_is_hashed_again() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("a");
        write_idx_set(&a, 8, 8, 40, 10, false);
        let cache = root.path().join("fp.json");
        let first = fingerprint(&a, &FILE_STEMS, Some(&cache)).unwrap();
        let f = a.join(FILE_STEMS[0]);
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        let mut bytes = std::fs::read(&f).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0x01;
        // The ctime has a clock tick of its own: make sure one passes.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f, &bytes).unwrap();
        let t = std::fs::File::options().write(true).open(&f).unwrap();
        t.set_modified(mtime).unwrap();
        drop(t);
        let meta = std::fs::metadata(&f).unwrap();
        assert_eq!(
            (meta.len(), meta.modified().unwrap()),
            (n as u64, mtime),
            "size and mtime as before"
        );
        let after = fingerprint(&a, &FILE_STEMS, Some(&cache)).unwrap();
        assert_ne!(after, first, "the content changed, so does the fingerprint");
        assert_eq!(after, fingerprint(&a, &FILE_STEMS, None).unwrap());
        // Replaced by another file (another inode) with the old bytes, size and mtime: the
        // old fingerprint again, and the cache is right about it.
        let old = root.path().join("old");
        bytes[n - 1] ^= 0x01;
        std::fs::write(&old, &bytes).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&old, &f).unwrap();
        assert_eq!(fingerprint(&a, &FILE_STEMS, Some(&cache)).unwrap(), first);
    }
}
