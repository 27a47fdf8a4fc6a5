//! The grid: short keys, `--set` overrides and the expansion of the axes into cells.

use super::{invalid, Cell, ConfigError, GridAxis, RawConfig, Resolved};

pub fn grid_key(written: &str) -> Option<String> {
    Some(match written {
        "temperature" | "alpha" | "beta" | "soft_loss" | "t2_scaling" => format!("kd.{written}"),
        "hidden" => "student.model.hidden".into(),
        // Several kd keys per value (an objective with its own weights): see `axis_sets`.
        "kd" => "kd".into(),
        k if (k.starts_with("student.") || k.starts_with("kd.")) && !k.ends_with('.') => k.into(),
        _ => return None,
    })
}

/// The text of a swept value, for tables and column values.
pub fn value_text(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Sequence(items) => {
            let parts: Vec<String> = items.iter().map(value_text).collect();
            parts.join("-")
        }
        // A kd-axis value's `name` (`DKD`), else its keys: `soft_loss=dkd alpha=1 dkd={nckd=8}`.
        serde_yaml::Value::Mapping(m) if m.get("name").is_some_and(|n| n.is_string()) => {
            value_text(&m["name"])
        }
        serde_yaml::Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| match v {
                serde_yaml::Value::Mapping(_) => format!("{}={{{}}}", value_text(k), value_text(v)),
                _ => format!("{}={}", value_text(k), value_text(v)),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

/// The grid key (as written) of the config `value` that sweeps dotted `key`, a key inside it or
/// a mapping holding it: a `--set` there would be overridden by every cell.
fn swept_by(value: &serde_yaml::Value, key: &str) -> Option<String> {
    let grid = value.get("grid")?.as_mapping()?;
    grid.iter().find_map(|(k, values)| {
        let written = k.as_str()?;
        let axis = grid_key(written)?;
        let overlaps = |axis: &str| {
            axis == key
                || axis.starts_with(&format!("{key}."))
                || key.starts_with(&format!("{axis}."))
        };
        let hit = if axis == "kd" {
            // Only the keys its values set.
            values
                .as_sequence()?
                .iter()
                .flat_map(|v| axis_sets(&axis, v).unwrap_or_default())
                .any(|(k, _)| overlaps(&k))
        } else {
            overlaps(&axis)
        };
        hit.then(|| written.to_string())
    })
}

/// The dotted overrides one value of the grid axis `key` stands for: the value itself, except on
/// the `kd` axis, whose values are mappings of kd keys (`{name: DKD, soft_loss: dkd, alpha: 1,
/// beta: 1}`), each key set over the config's `kd:` block, so objectives whose recipes differ
/// in several keys are compared in one grid. `name` (optional) is what the cell's `kd` column
/// says; it sets nothing.
fn axis_sets(
    key: &str,
    value: &serde_yaml::Value,
) -> Result<Vec<(String, serde_yaml::Value)>, String> {
    if key != "kd" {
        return Ok(vec![(key.to_string(), value.clone())]);
    }
    let Some(map) = value.as_mapping().filter(|m| !m.is_empty()) else {
        return Err(format!(
            "a value of the kd axis must be a mapping of kd keys, e.g. {{soft_loss: dkd, \
             alpha: 1, beta: 1}}; got `{}`",
            value_text(value)
        ));
    };
    map.iter()
        .filter(|(k, _)| k.as_str() != Some("name"))
        .map(|(k, v)| match k.as_str() {
            Some(k) => Ok((format!("kd.{k}"), v.clone())),
            None => Err(format!("kd keys must be strings, got `{}`", value_text(k))),
        })
        .collect()
}

/// Set each dotted key of `overrides` in the config `value` and parse the result back.
fn apply_overrides(
    value: &serde_yaml::Value,
    overrides: &[(&str, &serde_yaml::Value)],
) -> Result<RawConfig, String> {
    use serde_yaml::Value;
    let mut root = value.clone();
    for (key, v) in overrides {
        let mut node = &mut root;
        for part in key.split('.') {
            if node.is_null() {
                *node = Value::Mapping(Default::default());
            }
            let Value::Mapping(map) = node else {
                return Err(format!(
                    "`{key}`: `{part}` is inside a value that is not a mapping"
                ));
            };
            node = map
                .entry(Value::String(part.to_string()))
                .or_insert(Value::Null);
        }
        *node = (*v).clone();
    }
    serde_yaml::from_value(root).map_err(|e| format!("{e}"))
}

/// Resolve each grid value alone over the config without its grid, so that an error names its
/// axis and index (`grid.temperature[2]`). A value equal to an earlier one of its axis once
/// parsed (`2` and `2.0`) is refused: its cells would plan the same trial ids twice.
fn check_values(
    plain_value: &serde_yaml::Value,
    axes: &[(String, GridAxis)],
    gpus: &dyn Fn() -> usize,
) -> Result<(), ConfigError> {
    for (written, axis) in axes {
        for (i, v) in axis.values.iter().enumerate() {
            let key = format!("grid.{written}[{i}]");
            let kd = axis.key == "kd";
            let sets_same = |w: &serde_yaml::Value| same_value(&unnamed(v, kd), &unnamed(w, kd));
            if let Some(j) = axis.values[..i].iter().position(sets_same) {
                return Err(invalid(
                    &key,
                    format!(
                        "{} appears twice: it is grid.{written}[{j}] ({}) again, and would train \
                         the same trials twice; remove one",
                        value_text(v),
                        value_text(&axis.values[j])
                    ),
                ));
            }
            let sets = axis_sets(&axis.key, v).map_err(|m| invalid(&key, m))?;
            let sets: Vec<(&str, &serde_yaml::Value)> =
                sets.iter().map(|(k, v)| (k.as_str(), v)).collect();
            apply_overrides(plain_value, &sets)
                .map_err(|m| invalid(&key, m))?
                .resolve_base(gpus)
                .map_err(|e| match e {
                    ConfigError::Invalid { key: k, message } if k == axis.key => {
                        invalid(&key, message)
                    }
                    ConfigError::Invalid { key: k, message }
                        if sets.iter().any(|(s, _)| *s == k) =>
                    {
                        invalid(&key, format!("{k}: {message}"))
                    }
                    other => invalid(&key, other.to_string()),
                })?;
        }
    }
    Ok(())
}

/// A value of the kd axis (`kd`) without its `name`, which sets nothing; another as it is.
fn unnamed(v: &serde_yaml::Value, kd: bool) -> serde_yaml::Value {
    let mut v = v.clone();
    if let (true, serde_yaml::Value::Mapping(m)) = (kd, &mut v) {
        m.remove("name");
    }
    v
}

/// Whether two grid values say the same once parsed: numbers by value (`2` is `2.0`), lists
/// item by item, mappings key by key in any order.
fn same_value(a: &serde_yaml::Value, b: &serde_yaml::Value) -> bool {
    use serde_yaml::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Sequence(x), Value::Sequence(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (Value::Mapping(x), Value::Mapping(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        (Value::Tagged(x), Value::Tagged(y)) => x.tag == y.tag && same_value(&x.value, &y.value),
        _ => a == b,
    }
}

/// Why `--set KEY=TEXT` (parsed: `v`) is refused where grid.WRITTEN sweeps KEY, a key inside it
/// or a mapping holding it, and what to write instead: a swept key's value goes into the grid;
/// a mapping holding a swept key (`kd={alpha: 0.5}` with a temperature grid) is set key by key.
fn swept_set_message(
    config: &serde_yaml::Value,
    key: &str,
    written: &str,
    v: &serde_yaml::Value,
    text: &str,
) -> String {
    let axis = grid_key(written).unwrap_or_else(|| written.to_string());
    if !axis.starts_with(&format!("{key}.")) {
        return format!(
            "grid.{written} sweeps this key, so the grid's values would replace this one; use \
             --set grid.{written}=[{text}] to sweep that value alone"
        );
    }
    let how = match v.as_mapping() {
        Some(m) if !m.is_empty() => format!(
            "set its keys one by one: {}",
            key_by_key(config, key, v).join(" ")
        ),
        _ => format!("set the keys inside it one by one (--set {key}.KEY=VALUE)"),
    };
    format!(
        "`{key}` is a mapping that holds {axis}, which grid.{written} sweeps: setting it whole \
         would replace the grid's value in every cell; {how}"
    )
}

/// The `--set` arguments that set the mapping `v` under `key` one key at a time: a key the grid
/// sweeps goes into its axis (`--set grid.temperature=[2]`), a mapping holding one is split again.
fn key_by_key(config: &serde_yaml::Value, key: &str, v: &serde_yaml::Value) -> Vec<String> {
    let Some(m) = v.as_mapping() else {
        return vec![format!("--set {key}={}", flow(v))];
    };
    m.iter()
        .flat_map(|(k, sub)| {
            let dotted = format!("{key}.{}", value_text(k));
            match swept_by(config, &dotted) {
                Some(w) if grid_key(&w).is_some_and(|a| a.starts_with(&format!("{dotted}."))) => {
                    key_by_key(config, &dotted, sub)
                }
                Some(w) => vec![format!("--set grid.{w}=[{}]", flow(sub))],
                None => vec![format!("--set {dotted}={}", flow(sub))],
            }
        })
        .collect()
}

/// `v` as one line of YAML to type after `--set KEY=` (JSON is YAML).
fn flow(v: &serde_yaml::Value) -> String {
    match v {
        // Bare where YAML reads it back as this string (`dkd`, not `8` or `true`).
        serde_yaml::Value::String(s)
            if serde_yaml::from_str::<serde_yaml::Value>(s).ok().as_ref() == Some(v) =>
        {
            s.clone()
        }
        _ => serde_json::to_string(v).unwrap_or_else(|_| value_text(v)),
    }
}

impl RawConfig {
    /// [`RawConfig::resolve_on`] where no GPU is seen (`device: all` is refused): for tests and
    /// tools that never train.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        self.resolve_on(&|| 0)
    }

    /// Validate every key (grid included), fill every default and expand the grid into cells.
    /// `gpus` counts the GPUs `device: all` stands for (`env::visible_gpus` in the binary);
    /// resolution itself asks libtorch nothing.
    pub fn resolve_on(&self, gpus: &dyn Fn() -> usize) -> Result<Resolved, ConfigError> {
        let mut base = self.resolve_base(gpus)?;
        let axes = self.grid_axes()?;
        let mut cells = vec![Cell {
            swept: vec![],
            student: base.student.clone(),
            kd: base.kd,
        }];
        if !axes.is_empty() {
            let mut plain = self.clone();
            plain.grid = None;
            let plain_value = serde_yaml::to_value(&plain).expect("raw config serialises");
            check_values(&plain_value, &axes, gpus)?;
            cells.clear();
            let mut idx = vec![0usize; axes.len()];
            loop {
                let sets: Vec<(String, serde_yaml::Value)> = axes
                    .iter()
                    .zip(&idx)
                    .map(|((_, a), &i)| axis_sets(&a.key, &a.values[i]))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| invalid("grid", m))?
                    .into_iter()
                    .flatten()
                    .collect();
                let chosen: Vec<(&str, &serde_yaml::Value)> =
                    sets.iter().map(|(k, v)| (k.as_str(), v)).collect();
                let swept = axes
                    .iter()
                    .zip(&idx)
                    .map(|((w, a), &i)| (w.clone(), a.values[i].clone()))
                    .collect::<Vec<_>>();
                let cell = apply_overrides(&plain_value, &chosen)
                    .map_err(|m| invalid("grid", m))?
                    .resolve_base(gpus)
                    .map_err(|e| {
                        let names: Vec<String> = swept
                            .iter()
                            .map(|(k, v)| format!("{k}={}", value_text(v)))
                            .collect();
                        invalid("grid", format!("cell {}: {e}", names.join(", ")))
                    })?;
                cells.push(Cell {
                    swept,
                    student: cell.student,
                    kd: cell.kd,
                });
                // Odometer over the axes, last axis fastest.
                let mut a = axes.len();
                loop {
                    if a == 0 {
                        break;
                    }
                    a -= 1;
                    idx[a] += 1;
                    if idx[a] < axes[a].1.values.len() {
                        break;
                    }
                    idx[a] = 0;
                }
                if idx.iter().all(|&i| i == 0) {
                    break;
                }
            }
        }
        base.grid = axes.into_iter().map(|(_, a)| a).collect();
        base.cells = cells;
        super::search::check(&base)?;
        Ok(base)
    }

    /// The grid's axes: `(key as written, axis with the dotted key)`.
    fn grid_axes(&self) -> Result<Vec<(String, GridAxis)>, ConfigError> {
        let Some(grid) = &self.grid else {
            return Ok(vec![]);
        };
        let mut axes: Vec<(String, GridAxis)> = Vec::new();
        for (k, v) in grid {
            let written = match k {
                serde_yaml::Value::String(s) => s.clone(),
                other => {
                    return Err(invalid(
                        "grid",
                        format!("keys must be strings, got {other:?}"),
                    ))
                }
            };
            let key = grid_key(&written).ok_or_else(|| {
                invalid(
                    format!("grid.{written}"),
                    "not a grid key (use temperature, alpha, beta, soft_loss, hidden, kd (values: \
                     mappings of kd keys), or a dotted key under student. or kd., e.g. \
                     student.train.lr)",
                )
            })?;
            if axes.iter().any(|(_, a)| a.key == key) {
                return Err(invalid(
                    format!("grid.{written}"),
                    format!("sweeps {key} a second time"),
                ));
            }
            let values = match v {
                serde_yaml::Value::Sequence(items) if !items.is_empty() => items.clone(),
                serde_yaml::Value::Sequence(_) => {
                    return Err(invalid(format!("grid.{written}"), "the list is empty"))
                }
                _ => {
                    return Err(invalid(
                        format!("grid.{written}"),
                        "must be a list of values",
                    ))
                }
            };
            axes.push((written, GridAxis { key, values }));
        }
        // A key the kd axis sets and another axis sweeps would be set twice per cell.
        if let Some((_, kd)) = axes.iter().find(|(_, a)| a.key == "kd") {
            for (i, v) in kd.values.iter().enumerate() {
                for (dotted, _) in axis_sets(&kd.key, v).unwrap_or_default() {
                    if let Some((other, _)) = axes
                        .iter()
                        .find(|(_, a)| a.key == dotted || a.key.starts_with(&format!("{dotted}.")))
                    {
                        return Err(invalid(
                            format!("grid.kd[{i}]"),
                            format!(
                                "sets {dotted}, which grid.{other} sweeps; set it in one place"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(axes)
    }

    /// Apply `--set KEY=VALUE` overrides (VALUE is YAML) to this config.
    pub fn with_sets(&self, sets: &[String]) -> Result<RawConfig, ConfigError> {
        let mut value = serde_yaml::to_value(self).expect("raw config serialises");
        for set in sets {
            let (key, text) = set.split_once('=').ok_or_else(|| {
                invalid(
                    format!("--set {set}"),
                    "expected KEY=VALUE, e.g. kd.temperature=8",
                )
            })?;
            let v: serde_yaml::Value = serde_yaml::from_str(text)
                .map_err(|e| invalid(format!("--set {key}"), format!("bad YAML value: {e}")))?;
            let key = grid_key(key).unwrap_or_else(|| key.to_string());
            if let Some(written) = swept_by(&value, &key) {
                return Err(invalid(
                    format!("--set {key}"),
                    swept_set_message(&value, &key, &written, &v, text),
                ));
            }
            value = serde_yaml::to_value(
                apply_overrides(&value, &[(key.as_str(), &v)])
                    .map_err(|m| invalid(format!("--set {key}"), m))?,
            )
            .expect("raw config serialises");
        }
        serde_yaml::from_value(value).map_err(|e| invalid("--set", e.to_string()))
    }
}
