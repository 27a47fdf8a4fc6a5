//! The labels checked against the dataset's classes: a label out of range changes the task (one
//! byte of 200 made a 201-output model), so it is an error naming its file, index and value.

use std::path::PathBuf;

use crate::{find_file, DataError, DatasetName, Located, Result, Split};

/// The class count labels must lie below, and whose count it is.
struct Bound {
    classes: usize,
    /// `fashion-mnist gives`, `dataset.classes gives`, `the training labels give`.
    says: String,
    /// What to do about a label above it.
    hint: String,
}

/// The class count of the dataset at `at`, every label checked against it: a named dataset's own
/// ([`DatasetName::classes`]), a folder's `declared` one (`dataset.classes`), or else one more
/// than its largest training label, every class below that having a training image. A label out
/// of range is an error naming its file, its index in the file and its value.
pub(crate) fn class_count(
    name: DatasetName,
    at: &Located,
    declared: Option<usize>,
    train: &Split,
    test: &Split,
) -> Result<usize> {
    let b = bound(name, at, declared, train)?;
    for (is_test, split) in [(false, train), (true, test)] {
        let mut labels = split.labels.iter().enumerate();
        if let Some((i, &l)) = labels.find(|(_, &l)| l as usize >= b.classes) {
            return Err(DataError::Corrupt {
                format: at.format.name(),
                file: labels_file(at, is_test),
                reason: format!(
                    "label {l} at index {i} is out of range: {} {} classes (0 to {})",
                    b.says,
                    b.classes,
                    b.classes.saturating_sub(1)
                ),
                hint: b.hint,
            });
        }
    }
    Ok(b.classes)
}

/// The file holding the training (or `test`) labels, or the folder where several files do.
fn labels_file(at: &Located, test: bool) -> PathBuf {
    at.format
        .labels_file(test)
        .and_then(|stem| find_file(&at.dir, stem))
        .unwrap_or_else(|| at.dir.clone())
}

/// The bound of [`class_count`]; an error where a named dataset is declared another count, or a
/// folder's classes below its largest label lack training images.
fn bound(name: DatasetName, at: &Located, declared: Option<usize>, train: &Split) -> Result<Bound> {
    match (name.classes(), declared) {
        (Some(own), Some(d)) if d != own => Err(DataError::Invalid {
            what: "dataset.classes".into(),
            message: format!(
                "{d}, but {} has {own} classes; leave the key out (it is for a folder of format \
                 {})",
                name.as_str(),
                at.format.name()
            ),
        }),
        (Some(own), _) => Ok(Bound {
            classes: own,
            says: format!("{} gives", name.as_str()),
            hint: name.how_to_get(),
        }),
        (None, Some(d)) => Ok(Bound {
            classes: d,
            says: "dataset.classes gives".into(),
            hint: "Fix the label, or raise dataset.classes".into(),
        }),
        (None, None) => match inferred_classes(train) {
            Ok(classes) => Ok(Bound {
                classes,
                says: "the training labels give".into(),
                hint: "Fix the label".into(),
            }),
            Err((c, max, i)) => Err(DataError::Corrupt {
                format: at.format.name(),
                file: labels_file(at, false),
                reason: format!(
                    "no training image has label {c}, though the labels go up to {max} (first at \
                     index {i}): the classes of a folder are 0 to its largest training label, \
                     each with training images"
                ),
                hint: "Fix the label, or set dataset.classes to the data's class count".into(),
            }),
        },
    }
}

/// One more than the largest training label, when every class below it has a training image;
/// else the first class without one, the largest label and its first index.
fn inferred_classes(train: &Split) -> std::result::Result<usize, (usize, u8, usize)> {
    let Some(&max) = train.labels.iter().max() else {
        return Ok(0);
    };
    let mut seen = vec![false; max as usize + 1];
    for &l in &train.labels {
        seen[l as usize] = true;
    }
    match seen.iter().position(|&s| !s) {
        None => Ok(max as usize + 1),
        Some(c) => {
            let at = train.labels.iter().position(|&l| l == max);
            Err((c, max, at.expect("the max is a label")))
        }
    }
}
