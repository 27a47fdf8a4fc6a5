//! Dataset formats, one file each: which files a folder in the format holds, and how to read
//! them into images. To add one: write `formats/NAME.rs` with a unit struct implementing
//! [`Format`], then its line in `formats!` below; `dataset: {name: NAME, dir: ...}` then reads
//! any folder in it (a named dataset, with where to look and how to download it, is a
//! [`crate::DatasetName`] variant).

use std::io::Read;
use std::path::Path;

use crate::{find_file, DataError, Result, Split};

/// The registry of formats: `mod file { "name" => ITEM, ... }` declares `formats/file.rs` and
/// names each of its formats (a static implementing [`Format`]) in configs (`dataset.name`) and
/// ids. One file may hold several formats of one family (CIFAR-10 and CIFAR-100 binaries).
macro_rules! formats {
    ($(mod $file:ident { $($name:literal => $item:ident),+ $(,)? })+) => {
        $(pub mod $file;)+

        /// Every registered format's name, in registry order.
        pub const FORMATS: &[&str] = &[$($($name,)+)+];

        /// The format called `name`.
        pub fn by_name(name: &str) -> Option<&'static dyn Format> {
            match name {
                $($($name => Some(&$file::$item),)+)+
                _ => None,
            }
        }
    };
}

formats! {
    mod idx { "idx" => IDX }
    mod cifar_bin { "cifar10-bin" => CIFAR10, "cifar100-bin" => CIFAR100 }
    mod cifar_py { "cifar10-py" => CIFAR10, "cifar100-py" => CIFAR100 }
}

/// A dataset as its files hold it: training and test images, all of one shape.
#[derive(Debug, Clone)]
pub struct Images {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Pixels of each image channel-major (`[channels, height, width]`), 0..=255.
    pub train: Split,
    pub test: Split,
}

/// One on-disk dataset format.
pub trait Format: Sync {
    /// What the format is called in errors ("corrupt IDX file").
    fn name(&self) -> &'static str;
    /// The files a folder in this format holds, without a `.gz` ending (either is read); the
    /// dataset's fingerprint hashes them in this order.
    fn files(&self) -> &'static [&'static str];
    /// Read the folder `dir`; `hint` (how to get a good copy) goes into every error.
    fn read(&self, dir: &Path, hint: &str) -> Result<Images>;
    /// The folder the format's own distribution unpacks to (`cifar-10-batches-py`), if it has
    /// one: a `dataset.dir` may name that folder or the folder holding it (torchvision's root).
    fn folder(&self) -> Option<&'static str> {
        None
    }
    /// The file holding the labels of the training (or `test`) split, where one file does (the
    /// label errors name it); none where they are spread over several files.
    fn labels_file(&self, test: bool) -> Option<&'static str> {
        let _ = test;
        None
    }
}

/// The bytes of `path`, gunzipped when they are gzip (told by the content, not the name).
/// `format` and `hint` (how to get a good copy) go into every error.
pub(crate) fn read_bytes(path: &Path, format: &'static str, hint: &str) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing {
            file: path.to_path_buf(),
            hint: hint.to_string(),
        },
        _ => DataError::Io {
            file: path.to_path_buf(),
            source: e,
        },
    })?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .map_err(|e| DataError::Corrupt {
            format,
            file: path.to_path_buf(),
            reason: format!("gzip stream is damaged ({e})"),
            hint: hint.to_string(),
        })?;
    Ok(out)
}

/// The files `stems` of `dir` (each `stem.gz` or `stem`), read with [`read_bytes`] in parallel.
pub(crate) fn read_all(
    dir: &Path,
    stems: &[&str],
    format: &'static str,
    hint: &str,
) -> Result<Vec<(std::path::PathBuf, Vec<u8>)>> {
    use rayon::prelude::*;
    stems
        .par_iter()
        .map(|stem| {
            let path = find_file(dir, stem).ok_or_else(|| DataError::Missing {
                file: dir.join(stem),
                hint: hint.to_string(),
            })?;
            let bytes = read_bytes(&path, format, hint)?;
            Ok((path, bytes))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::DatasetName;

    #[test]
    fn a_format_is_a_dataset_name_that_serialises_as_before() {
        assert_eq!(
            super::FORMATS,
            [
                "idx",
                "cifar10-bin",
                "cifar100-bin",
                "cifar10-py",
                "cifar100-py"
            ]
        );
        let idx = DatasetName::parse("idx").unwrap();
        assert_eq!(idx, DatasetName::Folder("idx"));
        assert_eq!(idx.formats()[0].name(), "IDX");
        let names = |n: DatasetName| n.formats().iter().map(|f| f.name()).collect::<Vec<_>>();
        assert_eq!(
            names(DatasetName::Cifar100),
            ["CIFAR-100 python", "CIFAR-100 binary"]
        );
        assert_eq!(
            names(DatasetName::parse("cifar10-bin").unwrap()),
            ["CIFAR-10 binary"]
        );
        assert_eq!(serde_json::to_string(&idx).unwrap(), r#""idx""#);
        let mnist: DatasetName = serde_json::from_str(r#""fashion-mnist""#).unwrap();
        assert_eq!(mnist, DatasetName::FashionMnist);
        let known = DatasetName::known();
        assert_eq!(
            known[..5],
            ["fashion-mnist", "mnist", "cifar10", "cifar100", "idx"]
        );
        let err = serde_json::from_str::<DatasetName>(r#""cifar""#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown dataset `cifar` (known: fashion-mnist, mnist, cifar10, cifar100, idx, cifar10-bin,"),
            "{err}"
        );
    }
}
