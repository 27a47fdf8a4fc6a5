//! The IDX format of the MNIST family: a 4-byte magic (`0, 0, type, ndims`), `ndims` big-endian
//! u32 sizes, then the data. Only unsigned bytes (`type = 0x08`) are used by these datasets.
//! Files may be gzip-compressed; compression is detected from the content, not the name.

use std::path::Path;

use super::{Format, Images};
use crate::{find_file, DataError, Result, Split};

/// The four files of an IDX dataset (each may also end in `.gz`): training images and labels,
/// test images and labels.
pub const FILE_STEMS: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// What errors call the format.
const NAME: &str = "IDX";

/// The IDX format: MNIST, Fashion-MNIST and any folder of the four files.
#[derive(Debug, Clone, Copy)]
pub struct Idx;

/// The format's registered value.
pub static IDX: Idx = Idx;

impl Format for Idx {
    fn name(&self) -> &'static str {
        NAME
    }

    fn files(&self) -> &'static [&'static str] {
        &FILE_STEMS
    }

    fn labels_file(&self, test: bool) -> Option<&'static str> {
        Some(FILE_STEMS[if test { 3 } else { 1 }])
    }

    fn read(&self, dir: &Path, hint: &str) -> Result<Images> {
        // The training and test files decode in parallel (gzip inflation dominates).
        let (train, test) = rayon::join(
            || read_pair(dir, FILE_STEMS[0], FILE_STEMS[1], hint),
            || read_pair(dir, FILE_STEMS[2], FILE_STEMS[3], hint),
        );
        let ((train_dims, train), (test_dims, test)) = (train?, test?);
        let (height, width) = (train_dims[1], train_dims[2]);
        if (test_dims[1], test_dims[2]) != (height, width) {
            return Err(DataError::Corrupt {
                format: NAME,
                file: dir.join(FILE_STEMS[2]),
                reason: format!(
                    "test images are {}x{}, training images {height}x{width}",
                    test_dims[1], test_dims[2]
                ),
                hint: hint.to_string(),
            });
        }
        Ok(Images {
            channels: 1,
            height,
            width,
            train,
            test,
        })
    }
}

/// A decoded IDX file.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Read an IDX file of unsigned bytes, `.gz` or raw. `hint` (how to get a good copy) goes into
/// every error about the file's content.
pub fn read_idx(path: &Path, hint: &str) -> Result<IdxArray> {
    read_idx_of(path, None, hint)
}

/// [`read_idx`] of a file that must have `ndims` dimensions (3 for images, 1 for labels): a file
/// of the other kind is said to be one, before its sizes are checked.
fn read_idx_of(path: &Path, ndims: Option<usize>, hint: &str) -> Result<IdxArray> {
    let bytes = super::read_bytes(path, NAME, hint)?;
    let corrupt = |reason: String| DataError::Corrupt {
        format: NAME,
        file: path.to_path_buf(),
        reason,
        hint: hint.to_string(),
    };
    if let (Some(want), Some(&[0, 0, 0x08, found])) = (ndims, bytes.get(..4)) {
        if found as usize != want {
            return Err(corrupt(format!(
                "its header (magic 0x{:08x}) declares {found} dimension(s), {}, where {} \
                 (magic 0x{:08x}, {want} dimension(s)) belongs: the files are swapped or misnamed",
                0x0800 | found as u32,
                kind_of(found as usize),
                kind_of(want),
                0x0800 | want as u32,
            )));
        }
    }
    parse_idx(&bytes).map_err(corrupt)
}

/// What an IDX file of `ndims` dimensions holds in the MNIST family.
fn kind_of(ndims: usize) -> &'static str {
    match ndims {
        1 => "a labels file",
        3 => "an images file",
        _ => "neither an images nor a labels file",
    }
}

/// The images and labels of one split, checked against each other, with the images' dims.
fn read_pair(dir: &Path, images: &str, labels: &str, hint: &str) -> Result<(Vec<usize>, Split)> {
    let hint = hint.to_string();
    let ipath = find_file(dir, images).ok_or_else(|| DataError::Missing {
        file: dir.join(format!("{images}.gz")),
        hint: hint.clone(),
    })?;
    let lpath = find_file(dir, labels).ok_or_else(|| DataError::Missing {
        file: dir.join(format!("{labels}.gz")),
        hint: hint.clone(),
    })?;
    let img = read_idx_of(&ipath, Some(3), &hint)?;
    let lab = read_idx_of(&lpath, Some(1), &hint)?;
    let corrupt = |file: &Path, reason: String| DataError::Corrupt {
        format: NAME,
        file: file.to_path_buf(),
        reason,
        hint: hint.clone(),
    };
    if img.dims.len() != 3 {
        return Err(corrupt(
            &ipath,
            format!(
                "expected 3 dimensions (n, rows, cols), header has {}",
                img.dims.len()
            ),
        ));
    }
    if lab.dims.len() != 1 {
        return Err(corrupt(
            &lpath,
            format!("expected 1 dimension (n), header has {}", lab.dims.len()),
        ));
    }
    if img.dims[0] != lab.dims[0] {
        return Err(corrupt(
            &lpath,
            format!(
                "{} labels for {} images in {}",
                lab.dims[0],
                img.dims[0],
                ipath.display()
            ),
        ));
    }
    let split = Split {
        images: img.data,
        labels: lab.data,
    };
    Ok((img.dims, split))
}

/// Parse decoded IDX bytes.
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    if bytes.len() < 4 {
        return Err(format!("{} bytes, too short for a header", bytes.len()));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "bad magic {:02x} {:02x} (an IDX file starts with 00 00)",
            bytes[0], bytes[1]
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "element type 0x{:02x} is not unsigned byte (0x08)",
            bytes[2]
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err("header declares 0 dimensions".into());
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(format!(
            "header declares {ndims} dimensions but the file ends after {} bytes",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("dimensions overflow")?;
    let found = bytes.len() - header;
    if found != expected {
        return Err(format!(
            "header {dims:?} needs {expected} data bytes, found {found} (truncated or padded)"
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Encode an IDX file of unsigned bytes.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Helpers that write small IDX datasets, for tests here and in other crates.
pub mod testing {
    use super::encode_idx;
    use crate::FILE_STEMS;
    use std::io::Write;
    use std::path::Path;

    /// Write the four files of a synthetic `h x w` dataset with `n_train` / `n_test` images into
    /// `dir`, gzipped or raw. Image `i` has first pixel `i % 256` (so images are distinguishable)
    /// and label `i % 10`; its other pixels are a bright band whose row depends on the label, so
    /// a classifier can learn it.
    pub fn write_idx_set(dir: &Path, h: usize, w: usize, n_train: usize, n_test: usize, gz: bool) {
        std::fs::create_dir_all(dir).unwrap();
        for (k, n) in [(0, n_train), (2, n_test)] {
            let mut images = Vec::with_capacity(n * h * w);
            let mut labels = Vec::with_capacity(n);
            for i in 0..n {
                let label = (i % 10) as u8;
                labels.push(label);
                let band = (label as usize * h) / 10;
                for p in 0..h * w {
                    let v = if p == 0 {
                        (i % 256) as u8
                    } else if p / w == band {
                        200 + (i % 7) as u8
                    } else {
                        ((i * 31 + p * 17) % 40) as u8
                    };
                    images.push(v);
                }
            }
            write(dir, FILE_STEMS[k], &encode_idx(&[n, h, w], &images), gz);
            write(dir, FILE_STEMS[k + 1], &encode_idx(&[n], &labels), gz);
        }
    }

    pub fn write(dir: &Path, stem: &str, bytes: &[u8], gz: bool) {
        if gz {
            let f = std::fs::File::create(dir.join(format!("{stem}.gz"))).unwrap();
            let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            enc.write_all(bytes).unwrap();
            enc.finish().unwrap();
        } else {
            std::fs::write(dir.join(stem), bytes).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::write;
    use super::*;

    #[test]
    fn round_trip_raw_and_gz() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..2 * 8 * 8).map(|i| i as u8).collect();
        let bytes = encode_idx(&[2, 8, 8], &data);
        write(dir.path(), "a", &bytes, false);
        write(dir.path(), "b", &bytes, true);
        for f in ["a", "b.gz"] {
            let arr = read_idx(&dir.path().join(f), "").unwrap();
            assert_eq!(arr.dims, [2, 8, 8]);
            assert_eq!(arr.data, data);
        }
    }

    #[test]
    fn truncated_file_is_corrupt_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = encode_idx(&[3, 4, 4], &[1; 48]);
        bytes.truncate(40);
        write(dir.path(), "train-images-idx3-ubyte", &bytes, true);
        let err = read_idx(
            &dir.path().join("train-images-idx3-ubyte.gz"),
            "get a fresh copy",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("train-images-idx3-ubyte.gz: corrupt IDX file"),
            "{err}"
        );
        assert!(err.contains("needs 48 data bytes, found 24"), "{err}");
        assert!(err.ends_with("get a fresh copy"), "{err}");
    }

    #[test]
    fn damaged_gzip_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "x", &encode_idx(&[100], &[7; 100]), true);
        let p = dir.path().join("x.gz");
        let mut b = std::fs::read(&p).unwrap();
        let cut = b.len() - 6;
        b.truncate(cut);
        std::fs::write(&p, b).unwrap();
        let err = read_idx(&p, "").unwrap_err().to_string();
        assert!(err.contains("gzip stream is damaged"), "{err}");
    }

    #[test]
    fn bad_magic_and_type() {
        assert!(parse_idx(&[1, 0, 8, 1, 0, 0, 0, 0])
            .unwrap_err()
            .contains("bad magic"));
        assert!(parse_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 0])
            .unwrap_err()
            .contains("element type 0x0d"));
        assert!(parse_idx(&[0, 0, 8]).unwrap_err().contains("too short"));
    }

    #[test]
    fn missing_file_is_missing() {
        let err = read_idx(Path::new("/nonexistent/t10k-labels-idx1-ubyte"), "how")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "/nonexistent/t10k-labels-idx1-ubyte: not found. how");
    }
}
