//! Fetching datasets over HTTP(S), with an MD5 check of every file before it is kept.
//!
//! A file is written to `NAME.part`, checked, then renamed, so an interrupted or bad download
//! never leaves a file that looks complete.

use std::io::Read;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::{DataError, DatasetName, Result, FILE_STEMS};

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
            DatasetName::Idx => return None,
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
        let mut last_err = None;
        for mirror in &remote.mirrors {
            let url = format!("{}{name}", mirror);
            match fetch_checked(&url, &dest, md5) {
                Ok(()) => {
                    last_err = None;
                    break;
                }
                Err(e @ DataError::Checksum { .. }) => return Err(e),
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            return Err(e);
        }
        out.push(dest);
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A one-thread HTTP/1.1 server on loopback that serves `files` (name -> body) for `requests`
    /// requests and answers 404 to anything else. Returns its base URL.
    fn serve(files: Vec<(String, Vec<u8>)>, requests: usize) -> String {
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
}
