//! `teacher.model` and `student.model`: the mapping as written, read by the family its `arch`
//! names (the keys, defaults and checks of each family live in its file in the zoo).

use std::fmt;

use kd_model_zoo::{ModelError, ModelSpec, Role};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_yaml::{Mapping, Value};

use super::{invalid, ConfigError};

/// A `model:` mapping as written: `arch` and the keys of that family. Parsing already refuses a
/// key no family has and a value of the wrong type, so those errors carry their line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct RawModel(pub Mapping);

impl RawModel {
    /// The spec of `model` (absent: the role's default model), an error naming the key under
    /// `key`.
    pub(super) fn resolve(
        model: Option<&RawModel>,
        key: &str,
        role: Role,
    ) -> Result<ModelSpec, ConfigError> {
        let empty = Mapping::new();
        ModelSpec::from_config(model.map_or(&empty, |m| &m.0), role)
            .map_err(|ModelError::Spec { key: k, message }| invalid(format!("{key}.{k}"), message))
    }
}

impl<'de> Deserialize<'de> for RawModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawModel, D::Error> {
        d.deserialize_map(ModelVisitor)
    }
}

struct ModelVisitor;

impl<'de> Visitor<'de> for ModelVisitor {
    type Value = RawModel;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping with `arch` and its keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawModel, A::Error> {
        let mut out = Mapping::new();
        let mut arch: Option<String> = None;
        while let Some(key) = map.next_key_seed(ModelKey)? {
            if out.contains_key(key.as_str()) {
                return Err(de::Error::custom(format!("duplicate field `{key}`")));
            }
            let value = if key == "arch" {
                let a: String = map.next_value()?;
                arch = Some(a.clone());
                Value::String(a)
            } else {
                map.next_value_seed(Typed {
                    arch: arch.as_deref(),
                    key: &key,
                })?
            };
            out.insert(Value::String(key), value);
        }
        Ok(RawModel(out))
    }
}

/// A key some family has (refused inside the key, so the error carries the key's line).
struct ModelKey;

impl<'de> DeserializeSeed<'de> for ModelKey {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ModelKey {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a model key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<String, E> {
        let known = kd_model_zoo::model_keys();
        if known.contains(&key) {
            Ok(key.to_string())
        } else {
            Err(E::unknown_field(key, known))
        }
    }
}

/// A model key's value, refused unless its type can be the key's ([`kd_model_zoo::check_key`]).
/// The check runs inside the value's own visit, so the error names the key's path and line.
struct Typed<'a> {
    arch: Option<&'a str>,
    key: &'a str,
}

impl Typed<'_> {
    fn check<E: de::Error>(&self, value: Value) -> Result<Value, E> {
        kd_model_zoo::check_key(self.arch, self.key, &value).map_err(E::custom)?;
        Ok(value)
    }
}

impl<'de> DeserializeSeed<'de> for Typed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Typed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a value of `{}`", self.key)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.check(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.check(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.check(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.check(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.check(Value::from(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.check(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.check(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        let value = Value::deserialize(d)?;
        self.check(value)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        self.check(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Mapping::new();
        while let Some((k, v)) = map.next_entry::<Value, Value>()? {
            entries.insert(k, v);
        }
        self.check(Value::Mapping(entries))
    }
}
