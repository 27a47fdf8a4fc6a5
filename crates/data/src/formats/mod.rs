//! Dataset formats, one file each: which files a folder in the format holds, and how to read
//! them into images. A format is registered where a dataset uses it: the dataset's arm in
//! `DatasetName::format`.

use std::path::Path;

use crate::{Result, Split};

pub mod idx;

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
