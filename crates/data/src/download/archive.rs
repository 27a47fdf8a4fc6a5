//! Datasets published as one `.tar.gz` (CIFAR-10 and CIFAR-100): the archive is fetched,
//! MD5-checked as a whole, unpacked into a staging folder beside the target and only then moved
//! into place, so an interrupted or bad download leaves no folder that looks complete.

use std::path::{Path, PathBuf};

use super::fetch_from_mirrors;
use crate::{DataError, DatasetName, Result};

/// One published archive: mirrors tried in order, its file name and MD5, and the folder it
/// unpacks to.
#[derive(Debug, Clone)]
pub struct Archive {
    pub mirrors: Vec<String>,
    pub file: String,
    pub md5: String,
    /// The one top-level folder of the archive (`cifar-10-batches-py`).
    pub folder: String,
}

impl Archive {
    /// The python version of CIFAR-10/100 (the one torchvision downloads) from the authors'
    /// page, with the MD5s published there; `None` for datasets that are not archives.
    pub fn for_dataset(name: DatasetName) -> Option<Archive> {
        let (file, md5, folder) = match name {
            DatasetName::Cifar10 => (
                "cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a",
                "cifar-10-batches-py",
            ),
            DatasetName::Cifar100 => (
                "cifar-100-python.tar.gz",
                "eb9058c3a382ffc7106e4002c42a8d85",
                "cifar-100-python",
            ),
            _ => return None,
        };
        Some(Archive {
            mirrors: vec!["https://www.cs.toronto.edu/~kriz/".into()],
            file: file.into(),
            md5: md5.into(),
            folder: folder.into(),
        })
    }
}

/// Fetch `archive` into `dir` and unpack it there; returns the unpacked folder. A folder of that
/// name already in `dir` is kept as it is (delete it to fetch again). The archive itself is
/// removed once unpacked.
pub fn download_archive(archive: &Archive, dir: &Path) -> Result<PathBuf> {
    let io = |file: &Path| {
        let file = file.to_path_buf();
        move |e| DataError::Io { file, source: e }
    };
    let target = dir.join(&archive.folder);
    if target.is_dir() {
        return Ok(target);
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tarball = dir.join(&archive.file);
    fetch_from_mirrors(&archive.mirrors, &archive.file, &tarball, &archive.md5)?;
    let unpacked = unpack(&tarball, dir, &archive.folder);
    let _ = std::fs::remove_file(&tarball);
    unpacked?;
    Ok(target)
}

/// Unpack `tarball` into a staging folder of `dir` and move its `folder` to `dir/folder`.
fn unpack(tarball: &Path, dir: &Path, folder: &str) -> Result<()> {
    let io = |file: &Path| {
        let file = file.to_path_buf();
        move |e| DataError::Io { file, source: e }
    };
    let staging = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(dir)
        .map_err(io(dir))?;
    let file = std::fs::File::open(tarball).map_err(io(tarball))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    // `unpack` refuses entries that would land outside the staging folder (`..`, absolute).
    tar.unpack(staging.path()).map_err(|e| DataError::Corrupt {
        format: "tar.gz",
        file: tarball.to_path_buf(),
        reason: format!("cannot unpack ({e})"),
        hint: "the MD5 matched, so the disk may be full or the folder not writable".into(),
    })?;
    let inside = staging.path().join(folder);
    if !inside.is_dir() {
        return Err(DataError::Corrupt {
            format: "tar.gz",
            file: tarball.to_path_buf(),
            reason: format!("holds no folder `{folder}`"),
            hint: "the published archive unpacks to it".into(),
        });
    }
    let target = dir.join(folder);
    std::fs::rename(&inside, &target).map_err(io(&target))
}

#[cfg(test)]
mod tests {
    use md5::{Digest, Md5};

    use super::*;
    use crate::formats::cifar_bin::{testing::write_bin_set, CIFAR10};
    use crate::formats::Format;

    /// A `.tar.gz` of a small binary CIFAR-10 folder named `folder`.
    fn tarball(folder: &str) -> Vec<u8> {
        let src = tempfile::tempdir().unwrap();
        write_bin_set(&CIFAR10, &src.path().join(folder), 15, 3);
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.append_dir_all(folder, src.path().join(folder)).unwrap();
        tar.into_inner().unwrap().finish().unwrap()
    }

    fn archive_for(body: &[u8], url: String) -> Archive {
        Archive {
            mirrors: vec![url],
            file: "cifar-10-binary.tar.gz".into(),
            md5: hex::encode(Md5::digest(body)),
            folder: "cifar-10-batches-bin".into(),
        }
    }

    #[test]
    fn the_published_archives_and_their_md5s() {
        let a = Archive::for_dataset(DatasetName::Cifar10).unwrap();
        assert_eq!(
            format!("{}{}", a.mirrors[0], a.file),
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
        );
        assert_eq!(a.md5, "c58f30108f718f92721af3b95e74349a");
        let b = Archive::for_dataset(DatasetName::Cifar100).unwrap();
        assert_eq!(
            (b.md5.as_str(), b.folder.as_str()),
            ("eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python")
        );
        assert!(Archive::for_dataset(DatasetName::Mnist).is_none());
    }

    #[test]
    fn a_checked_archive_unpacks_into_a_readable_folder_and_is_removed() {
        let body = tarball("cifar-10-batches-bin");
        let url =
            super::super::tests::serve(vec![("cifar-10-binary.tar.gz".into(), body.clone())], 1);
        let dir = tempfile::tempdir().unwrap();
        let got = download_archive(&archive_for(&body, url), dir.path()).unwrap();
        assert_eq!(got, dir.path().join("cifar-10-batches-bin"));
        let images = CIFAR10.read(&got, "").unwrap();
        assert_eq!((images.train.len(), images.test.len()), (15, 3));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            ["cifar-10-batches-bin"],
            "no archive, no staging folder"
        );
        // Present: kept, nothing fetched (the server answered its one request).
        let again = download_archive(
            &archive_for(&body, "http://127.0.0.1:9/".into()),
            dir.path(),
        );
        assert_eq!(again.unwrap(), got);
    }

    #[test]
    fn a_checksum_mismatch_or_a_wrong_archive_leaves_nothing() {
        let body = tarball("cifar-10-batches-bin");
        let url =
            super::super::tests::serve(vec![("cifar-10-binary.tar.gz".into(), body.clone())], 1);
        let mut archive = archive_for(&body, url);
        archive.md5 = "0".repeat(32);
        let dir = tempfile::tempdir().unwrap();
        let err = download_archive(&archive, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cifar-10-binary.tar.gz: checksum mismatch: expected md5 0000"),
            "{err}"
        );
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());

        let other = tarball("something-else");
        let url =
            super::super::tests::serve(vec![("cifar-10-binary.tar.gz".into(), other.clone())], 1);
        let err = download_archive(&archive_for(&other, url), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("holds no folder `cifar-10-batches-bin`"),
            "{err}"
        );
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
