//! Dataset formats, one file each: which files a folder in the format holds, and how to read
//! them into images. To add one: write `formats/NAME.rs` with a unit struct implementing
//! [`Format`], then its line in `formats!` below; `dataset: {name: NAME, dir: ...}` then reads
//! any folder in it (a named dataset, with where to look and how to download it, is a
//! [`crate::DatasetName`] variant).

use std::path::Path;

use crate::{Result, Split};

/// The registry of formats, one line each: `"name" => file::Unit` declares `formats/file.rs`
/// and names the format in configs (`dataset.name`) and ids.
macro_rules! formats {
    ($($name:literal => $file:ident::$unit:ident,)+) => {
        $(pub mod $file;)+

        /// Every registered format's name, in registry order.
        pub const FORMATS: &[&str] = &[$($name),+];

        /// The format called `name`.
        pub fn by_name(name: &str) -> Option<&'static dyn Format> {
            match name {
                $($name => Some(&$file::$unit),)+
                _ => None,
            }
        }
    };
}

formats! {
    "idx" => idx::Idx,
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
}

#[cfg(test)]
mod tests {
    use crate::DatasetName;

    #[test]
    fn a_format_is_a_dataset_name_that_serialises_as_before() {
        assert_eq!(super::FORMATS, ["idx"]);
        let idx = DatasetName::parse("idx").unwrap();
        assert_eq!(idx, DatasetName::Folder("idx"));
        assert_eq!(idx.format().name(), "IDX");
        assert_eq!(serde_json::to_string(&idx).unwrap(), r#""idx""#);
        let mnist: DatasetName = serde_json::from_str(r#""fashion-mnist""#).unwrap();
        assert_eq!(mnist, DatasetName::FashionMnist);
        assert_eq!(DatasetName::known(), ["fashion-mnist", "mnist", "idx"]);
        let err = serde_json::from_str::<DatasetName>(r#""cifar""#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown dataset `cifar` (known: fashion-mnist, mnist, idx)"),
            "{err}"
        );
    }
}
