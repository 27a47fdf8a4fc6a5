//! The binary version of CIFAR-10 and CIFAR-100 (`cifar-10-batches-bin/`, `cifar-100-binary/`,
//! "suitable for C programs"): files of fixed-size records, each the label byte(s) then the
//! 3072 pixels of a 32x32 colour image, channel-major (1024 red, 1024 green, 1024 blue, each
//! plane row-major). CIFAR-100 records carry two label bytes, the coarse (20 superclasses) then
//! the fine (100 classes) label; kd-sweep trains on the fine one, as every KD paper does.

use std::path::Path;

use super::{read_all, Format, Images};
use crate::{DataError, Result, Split};

/// Pixels of one CIFAR image: 3 channels of 32x32.
pub const PIXELS: usize = 3 * 32 * 32;

/// One binary CIFAR distribution.
#[derive(Debug)]
pub struct CifarBin {
    /// What errors call it ("CIFAR-10 binary").
    name: &'static str,
    classes: usize,
    /// Label bytes before each image; the last is the label trained on.
    label_bytes: usize,
    /// Training files then test files.
    files: &'static [&'static str],
    train_files: usize,
    folder: &'static str,
}

/// CIFAR-10, binary version: five training batches and one test batch of 10,000 records.
pub static CIFAR10: CifarBin = CifarBin {
    name: "CIFAR-10 binary",
    classes: 10,
    label_bytes: 1,
    files: &[
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ],
    train_files: 5,
    folder: "cifar-10-batches-bin",
};

/// CIFAR-100, binary version: 50,000 training and 10,000 test records, coarse and fine label.
pub static CIFAR100: CifarBin = CifarBin {
    name: "CIFAR-100 binary",
    classes: 100,
    label_bytes: 2,
    files: &["train.bin", "test.bin"],
    train_files: 1,
    folder: "cifar-100-binary",
};

impl Format for CifarBin {
    fn name(&self) -> &'static str {
        self.name
    }

    fn files(&self) -> &'static [&'static str] {
        self.files
    }

    fn folder(&self) -> Option<&'static str> {
        Some(self.folder)
    }

    fn read(&self, dir: &Path, hint: &str) -> Result<Images> {
        let files = (self.name, self.files, self.train_files);
        read_cifar(dir, files, hint, |bytes, split| self.parse(bytes, split))
    }
}

/// Read a CIFAR folder of either layout: `files` is (the format's name, its training then test
/// files, how many are training files); `parse` appends one file's images and labels to a split.
/// Errors name the file.
pub(super) fn read_cifar(
    dir: &Path,
    (name, files, train_files): (&'static str, &[&str], usize),
    hint: &str,
    parse: impl Fn(&[u8], &mut Split) -> std::result::Result<(), String>,
) -> Result<Images> {
    let read = read_all(dir, files, name, hint)?;
    let mut splits = [Split::default(), Split::default()];
    for (i, (path, bytes)) in read.iter().enumerate() {
        let split = &mut splits[usize::from(i >= train_files)];
        parse(bytes, split).map_err(|reason| DataError::Corrupt {
            format: name,
            file: path.clone(),
            reason,
            hint: hint.to_string(),
        })?;
    }
    let [train, test] = splits;
    Ok(Images {
        channels: 3,
        height: 32,
        width: 32,
        train,
        test,
    })
}

impl CifarBin {
    /// Append the records of one file to `split`.
    fn parse(&self, bytes: &[u8], split: &mut Split) -> std::result::Result<(), String> {
        let record = self.label_bytes + PIXELS;
        if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
            return Err(format!(
                "{} bytes is not a whole number of {record}-byte records ({} label byte(s) and \
                 3x32x32 pixels each)",
                bytes.len(),
                self.label_bytes
            ));
        }
        split.images.reserve(bytes.len() / record * PIXELS);
        for (i, r) in bytes.chunks_exact(record).enumerate() {
            let label = r[self.label_bytes - 1];
            if label as usize >= self.classes {
                return Err(format!(
                    "record {i} has label {label}; {} has {} classes (0 to {})",
                    self.name,
                    self.classes,
                    self.classes - 1
                ));
            }
            split.labels.push(label);
            split.images.extend_from_slice(&r[self.label_bytes..]);
        }
        Ok(())
    }
}

/// Writers of small binary CIFAR folders, for tests here and in other crates.
pub mod testing {
    use super::{CifarBin, PIXELS};

    /// The pixels of synthetic image `i` of label `label`: its first pixel is `i % 256` (so
    /// images are distinguishable), channel `c` is brighter in a band of rows set by the label,
    /// so a classifier can learn it. Shared with the python-layout writer.
    pub fn image(i: usize, label: usize, classes: usize) -> Vec<u8> {
        let band = label * 32 / classes;
        (0..PIXELS)
            .map(|p| {
                let (c, row) = (p / 1024, (p % 1024) / 32);
                if p == 0 {
                    (i % 256) as u8
                } else if row == band {
                    150 + 30 * c as u8 + (i % 7) as u8
                } else {
                    ((i * 31 + p * 17) % 60) as u8
                }
            })
            .collect()
    }

    /// Write `format`'s files into `dir`: `n_train` records spread over its training files and
    /// `n_test` in its test file; image `i` has label `i % classes` (CIFAR-100's coarse label
    /// is the fine one / 5).
    pub fn write_bin_set(format: &CifarBin, dir: &std::path::Path, n_train: usize, n_test: usize) {
        std::fs::create_dir_all(dir).unwrap();
        let per_file = n_train.div_ceil(format.train_files);
        for (k, file) in format.files.iter().enumerate() {
            let range = if k < format.train_files {
                k * per_file..((k + 1) * per_file).min(n_train)
            } else {
                0..n_test
            };
            let mut bytes = Vec::new();
            for i in range {
                let label = i % format.classes;
                if format.label_bytes == 2 {
                    bytes.push((label / 5) as u8);
                }
                bytes.push(label as u8);
                bytes.extend(image(i, label, format.classes));
            }
            std::fs::write(dir.join(file), bytes).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{image, write_bin_set};
    use super::*;

    #[test]
    fn reads_both_distributions_fine_labels_and_channel_major_pixels() {
        for (format, classes) in [(&CIFAR10, 10), (&CIFAR100, 100)] {
            let dir = tempfile::tempdir().unwrap();
            write_bin_set(format, dir.path(), 23, 7);
            let images = format.read(dir.path(), "").unwrap();
            assert_eq!((images.channels, images.height, images.width), (3, 32, 32));
            assert_eq!((images.train.len(), images.test.len()), (23, 7));
            assert_eq!(images.train.images.len(), 23 * PIXELS);
            let labels: Vec<u8> = (0..23).map(|i| (i % classes) as u8).collect();
            assert_eq!(images.train.labels, labels, "{}", format.name);
            assert_eq!(images.train.images[22 * PIXELS..], image(22, 22 % classes, classes));
            assert_eq!(images.test.images[..PIXELS], image(0, 0, classes));
        }
    }

    #[test]
    fn a_damaged_file_is_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        write_bin_set(&CIFAR10, dir.path(), 10, 2);
        let f = dir.path().join("data_batch_3.bin");
        let mut b = std::fs::read(&f).unwrap();
        b.pop();
        std::fs::write(&f, b).unwrap();
        let err = CIFAR10.read(dir.path(), "get a fresh copy").unwrap_err().to_string();
        assert!(err.contains("data_batch_3.bin: corrupt CIFAR-10 binary file"), "{err}");
        assert!(err.contains("6145 bytes is not a whole number of 3073-byte records"), "{err}");
        assert!(err.ends_with("get a fresh copy"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        write_bin_set(&CIFAR100, dir.path(), 3, 2);
        let f = dir.path().join("test.bin");
        let mut b = std::fs::read(&f).unwrap();
        b[3074 + 1] = 100;
        std::fs::write(&f, b).unwrap();
        let err = CIFAR100.read(dir.path(), "").unwrap_err().to_string();
        assert!(err.contains("test.bin: corrupt CIFAR-100 binary file: record 1 has label 100; CIFAR-100 binary has 100 classes (0 to 99)"), "{err}");

        std::fs::remove_file(dir.path().join("train.bin")).unwrap();
        let err = CIFAR100.read(dir.path(), "how").unwrap_err().to_string();
        assert!(err.ends_with("train.bin: not found. how"), "{err}");
    }
}
