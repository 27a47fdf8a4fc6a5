//! The labels checked against the dataset's classes: a label out of range changes the task (one
//! byte of 200 made a 201-output model), so it is an error naming its file, index and value.

use crate::{find_file, DataError, DatasetName, Located, Result, Split};

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
    let file = |test: bool| {
        at.format
            .labels_file(test)
            .and_then(|stem| find_file(&at.dir, stem))
            .unwrap_or_else(|| at.dir.clone())
    };
    let bad = |test: bool, reason: String, hint: String| DataError::Corrupt {
        format: at.format.name(),
        file: file(test),
        reason,
        hint,
    };
    let (classes, whose, hint) = match (name.classes(), declared) {
        (Some(own), Some(d)) if d != own => {
            return Err(DataError::Invalid {
                what: "dataset.classes".into(),
                message: format!(
                    "{d}, but {} has {own} classes; leave the key out (it is for a folder of \
                     format {})",
                    name.as_str(),
                    at.format.name()
                ),
            })
        }
        (Some(own), _) => (own, name.as_str().to_string(), name.how_to_get()),
        (None, Some(d)) => (
            d,
            "dataset.classes".to_string(),
            "Fix the label, or raise dataset.classes".to_string(),
        ),
        (None, None) => (
            inferred_classes(train).map_err(|(c, max, i)| {
                bad(
                    false,
                    format!(
                    "no training image has label {c}, though the labels go up to {max} (first at \
                     index {i}): the classes of a folder are 0 to its largest training label, \
                     each with training images"
                ),
                    "Fix the label, or set dataset.classes to the data's class count".into(),
                )
            })?,
            "the training labels".to_string(),
            "Fix the label".to_string(),
        ),
    };
    for (is_test, split) in [(false, train), (true, test)] {
        if let Some((i, &l)) = split
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= classes)
        {
            return Err(bad(
                is_test,
                format!(
                    "label {l} at index {i} is out of range: {whose} give{} {classes} classes (0 to {})",
                    if whose.starts_with("the ") { "" } else { "s" },
                    classes - 1
                ),
                hint.clone(),
            ));
        }
    }
    Ok(classes)
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
            let at = train
                .labels
                .iter()
                .position(|&l| l == max)
                .expect("the max is a label");
            Err((c, max, at))
        }
    }
}
