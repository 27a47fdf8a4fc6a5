//! The python version of CIFAR-10 and CIFAR-100 (`cifar-10-batches-py/`, `cifar-100-python/`,
//! what torchvision downloads): each file a pickled dict whose `data` is a numpy `uint8` array
//! of shape `(n, 3072)` (rows channel-major, as in the binary version) and whose labels are a
//! list of ints (`labels` in CIFAR-10, `fine_labels` in CIFAR-100). The published files are
//! Python 2 pickles (protocol 2): keys are byte strings and the array is numpy's reduce form,
//! `_reconstruct(ndarray, (0,), b'b')` then its state `(version, shape, dtype, fortran, bytes)`.
//! They are read with `serde-pickle`, which runs no Python: the array's class and dtype come
//! back as their state, and the shape, the order and the byte count are checked here.

use std::path::Path;

use serde_pickle::{HashableValue, Value};

use super::cifar_bin::{read_cifar, PIXELS};
use super::{Format, Images};
use crate::{Result, Split};

/// One python-layout CIFAR distribution.
#[derive(Debug)]
pub struct CifarPy {
    name: &'static str,
    classes: usize,
    /// The dict key of the labels trained on.
    labels: &'static str,
    /// Training files then test files.
    files: &'static [&'static str],
    train_files: usize,
    folder: &'static str,
}

/// CIFAR-10, python version: five training batches and one test batch of 10,000 images.
pub static CIFAR10: CifarPy = CifarPy {
    name: "CIFAR-10 python",
    classes: 10,
    labels: "labels",
    files: &[
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ],
    train_files: 5,
    folder: "cifar-10-batches-py",
};

/// CIFAR-100, python version: `train` (50,000) and `test` (10,000), fine labels.
pub static CIFAR100: CifarPy = CifarPy {
    name: "CIFAR-100 python",
    classes: 100,
    labels: "fine_labels",
    files: &["train", "test"],
    train_files: 1,
    folder: "cifar-100-python",
};

impl Format for CifarPy {
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

/// The entry `key` of a pickled dict, whether its keys are Python 2 byte strings (the published
/// files) or Python 3 strings (files pickled again under Python 3).
fn entry<'a>(dict: &'a std::collections::BTreeMap<HashableValue, Value>, key: &str) -> Option<&'a Value> {
    dict.get(&HashableValue::Bytes(key.as_bytes().to_vec()))
        .or_else(|| dict.get(&HashableValue::String(key.to_string())))
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::I64(i) => Some(*i),
        _ => None,
    }
}

impl CifarPy {
    /// Append the images and labels of one pickled batch to `split`.
    fn parse(&self, bytes: &[u8], split: &mut Split) -> std::result::Result<(), String> {
        let options = serde_pickle::DeOptions::new().replace_unresolved_globals();
        let value = serde_pickle::value_from_slice(bytes, options)
            .map_err(|e| format!("not a readable pickle ({e})"))?;
        let Value::Dict(dict) = value else {
            return Err("the pickle is not a dict".into());
        };
        let data = entry(&dict, "data").ok_or("the dict has no `data` entry")?;
        let images = array_bytes(data).map_err(|e| format!("`data`: {e}"))?;
        let labels = match entry(&dict, self.labels) {
            Some(Value::List(l)) => l,
            Some(_) => return Err(format!("`{}` is not a list", self.labels)),
            None => return Err(format!("the dict has no `{}` entry", self.labels)),
        };
        let n = images.len() / PIXELS;
        if labels.len() != n {
            return Err(format!("{} labels for {n} images", labels.len()));
        }
        for (i, l) in labels.iter().enumerate() {
            match int(l) {
                Some(l) if (0..self.classes as i64).contains(&l) => split.labels.push(l as u8),
                _ => {
                    return Err(format!(
                        "`{}`[{i}] is {l:?}; {} has {} classes (0 to {})",
                        self.labels,
                        self.name,
                        self.classes,
                        self.classes - 1
                    ))
                }
            }
        }
        split.images.extend_from_slice(images);
        Ok(())
    }
}

/// The bytes of a pickled C-ordered numpy array of shape `(n, 3072)` and one byte per element.
fn array_bytes(v: &Value) -> std::result::Result<&[u8], String> {
    // numpy's state: (version, shape, dtype, is_fortran, raw bytes).
    let state = match v {
        Value::Tuple(t) | Value::List(t) if t.len() == 5 => t,
        _ => return Err("not a pickled numpy array".into()),
    };
    let shape: Vec<i64> = match &state[1] {
        Value::Tuple(s) | Value::List(s) => s.iter().map(int).collect::<Option<_>>(),
        _ => None,
    }
    .ok_or("the array's shape is not a tuple of ints")?;
    if shape.len() != 2 || shape[1] != PIXELS as i64 || shape[0] <= 0 {
        return Err(format!("shape {shape:?}, expected (n, 3072) (3x32x32 pixels per row)"));
    }
    if state[3] != Value::Bool(false) {
        return Err("the array is Fortran-ordered, expected C order".into());
    }
    let raw = match &state[4] {
        Value::Bytes(b) => b.as_slice(),
        _ => return Err("the array's data is not a byte string".into()),
    };
    let n = shape[0] as usize;
    if raw.len() != n * PIXELS {
        return Err(format!(
            "{} data bytes for shape ({n}, 3072): not uint8 (1 byte per pixel) or truncated",
            raw.len()
        ));
    }
    Ok(raw)
}

/// Writers of small python-layout CIFAR folders with real numpy, for tests here and in other
/// crates.
pub mod testing {
    use std::path::Path;

    use super::CifarPy;

    /// Write `format`'s files into `dir` with `python` (numpy needed), pickled with protocol 2
    /// as the published files are: the same synthetic images as the binary writer
    /// ([`super::super::cifar_bin::testing::image`]), so both layouts hold the same dataset.
    /// Keys are byte strings when `py2_keys` (as in the published files), else str.
    pub fn write_py_set(
        format: &CifarPy,
        python: &Path,
        dir: &Path,
        n_train: usize,
        n_test: usize,
        py2_keys: bool,
    ) {
        std::fs::create_dir_all(dir).unwrap();
        let script = r#"
import pickle, sys
import numpy as np
out, classes, label_key, n_train, n_test, train_files, py2 = sys.argv[1:8]
classes, n_train, n_test, train_files = int(classes), int(n_train), int(n_test), int(train_files)
files = sys.argv[8:]
def image(i, label):
    p = np.arange(3072)
    c, row = p // 1024, (p % 1024) // 32
    v = ((i * 31 + p * 17) % 60).astype(np.int64)
    v = np.where(row == label * 32 // classes, 150 + 30 * c + i % 7, v)
    v[0] = i % 256
    return v.astype(np.uint8)
key = (lambda k: k.encode()) if py2 == "1" else (lambda k: k)
per = -(-n_train // train_files)
for k, name in enumerate(files):
    rows = range(k * per, min((k + 1) * per, n_train)) if k < train_files else range(n_test)
    labels = [i % classes for i in rows]
    data = np.stack([image(i, i % classes) for i in rows])
    d = {key("data"): data, key(label_key): labels, key("batch_label"): name}
    if label_key == "fine_labels":
        d[key("coarse_labels")] = [l // 5 for l in labels]
    with open(f"{out}/{name}", "wb") as f:
        pickle.dump(d, f, protocol=2)
"#;
        let o = std::process::Command::new(python)
            .arg("-c")
            .arg(script)
            .arg(dir)
            .args([
                format.classes.to_string(),
                format.labels.to_string(),
                n_train.to_string(),
                n_test.to_string(),
                format.train_files.to_string(),
                if py2_keys { "1" } else { "0" }.to_string(),
            ])
            .args(format.files)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
        assert!(
            o.status.success(),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::testing::write_py_set;
    use super::*;
    use crate::formats::cifar_bin::{self, testing::write_bin_set};

    fn python() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
    }

    #[test]
    fn numpy_pickles_read_as_the_binary_version_of_the_same_images() {
        for (py, bin, keys) in [
            (&CIFAR10, &cifar_bin::CIFAR10, true),
            (&CIFAR100, &cifar_bin::CIFAR100, false),
        ] {
            let dir = tempfile::tempdir().unwrap();
            write_py_set(py, &python(), &dir.path().join("py"), 23, 7, keys);
            write_bin_set(bin, &dir.path().join("bin"), 23, 7);
            let a = py.read(&dir.path().join("py"), "").unwrap();
            let b = bin.read(&dir.path().join("bin"), "").unwrap();
            assert_eq!((a.channels, a.height, a.width), (3, 32, 32));
            assert_eq!((a.train.len(), a.test.len()), (23, 7), "{}", py.name);
            assert_eq!(a.train.labels, b.train.labels);
            assert_eq!(a.train.images, b.train.images);
            assert_eq!(a.test.labels, b.test.labels);
            assert_eq!(a.test.images, b.test.images);
        }
    }

    #[test]
    fn a_wrong_pickle_is_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        write_py_set(&CIFAR100, &python(), dir.path(), 4, 2, true);
        let script = |code: &str| {
            let o = std::process::Command::new(python())
                .args(["-c", code, dir.path().to_str().unwrap()])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        // float32 pixels: the byte count gives it away.
        script(
            "import pickle, sys, numpy as np\n\
             d = {b'data': np.zeros((2, 3072), np.float32), b'fine_labels': [0, 1]}\n\
             pickle.dump(d, open(sys.argv[1] + '/test', 'wb'), protocol=2)",
        );
        let err = CIFAR100.read(dir.path(), "fix").unwrap_err().to_string();
        assert!(err.contains("test: corrupt CIFAR-100 python file: `data`: 24576 data bytes for shape (2, 3072): not uint8"), "{err}");
        assert!(err.ends_with("fix"), "{err}");
        script(
            "import pickle, sys, numpy as np\n\
             d = {b'data': np.zeros((2, 3072), np.uint8), b'labels': [0, 1]}\n\
             pickle.dump(d, open(sys.argv[1] + '/test', 'wb'), protocol=2)",
        );
        let err = CIFAR100.read(dir.path(), "").unwrap_err().to_string();
        assert!(err.contains("the dict has no `fine_labels` entry"), "{err}");
        std::fs::write(dir.path().join("test"), b"not a pickle").unwrap();
        let err = CIFAR100.read(dir.path(), "").unwrap_err().to_string();
        assert!(err.contains("test: corrupt CIFAR-100 python file: not a readable pickle"), "{err}");
    }
}
