//! A `model:` mapping of a config, read by the family its `arch` names. Each family owns its
//! keys in its file: a serde struct with `deny_unknown_fields` and every field optional
//! ([`Configure::Keys`]), filled from the role's defaults ([`Configure::from_keys`]). What the
//! families share (the `arch` lookup, keys of another family, type errors, the spec's checks)
//! is written here once.

use std::marker::PhantomData;
use std::sync::OnceLock;

use serde::de::{self, DeserializeOwned, Visitor};
use serde_yaml::{Mapping, Value};

use crate::{spec_err, Family, ModelError, ModelSpec};

/// The `arch` of a `model:` mapping without one.
pub const DEFAULT_ARCH: &str = "mlp";

/// Whose model a config describes; a family's defaults may differ by role (Hinton's teacher is
/// bigger and regularised, the student plain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Teacher,
    Student,
}

impl Role {
    /// The config's key for the role: `teacher` or `student`.
    pub fn key(self) -> &'static str {
        match self {
            Role::Teacher => "teacher",
            Role::Student => "student",
        }
    }
}

/// The config side of a family, implemented in the family's file.
pub(crate) trait Configure: Family + Into<ModelSpec> + Sized {
    /// The `model:` keys besides `arch`: a serde struct with `deny_unknown_fields` whose fields
    /// are all `Option`s, in the order errors list them.
    type Keys: DeserializeOwned;
    /// The spec the keys describe, `role`'s default for each absent key (checked afterwards by
    /// [`Family::check`]).
    fn from_keys(keys: Self::Keys, role: Role) -> Result<Self, ModelError>;
}

/// [`Configure`] without its type parameters, for the registry.
pub(crate) trait Reader: Sync {
    /// The family's keys besides `arch`.
    fn keys(&self) -> &'static [&'static str];
    /// Whether `value` has the type of the family's `key` (a key of the family).
    fn check_value(&self, key: &str, value: &Value) -> Result<(), String>;
    /// The spec of the keys (all of them the family's, each of the right type).
    fn read(&self, keys: Mapping, role: Role) -> Result<ModelSpec, ModelError>;
}

/// The [`Reader`] of family `F`.
pub(crate) struct ReaderOf<F>(PhantomData<fn() -> F>);

impl<F> ReaderOf<F> {
    pub(crate) const NEW: ReaderOf<F> = ReaderOf(PhantomData);
}

impl<F: Configure> Reader for ReaderOf<F> {
    fn keys(&self) -> &'static [&'static str] {
        field_names::<F::Keys>()
    }

    fn check_value(&self, key: &str, value: &Value) -> Result<(), String> {
        let one = Mapping::from_iter([(Value::from(key), value.clone())]);
        serde_yaml::from_value::<F::Keys>(Value::Mapping(one))
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn read(&self, keys: Mapping, role: Role) -> Result<ModelSpec, ModelError> {
        let keys = serde_yaml::from_value::<F::Keys>(Value::Mapping(keys))
            .map_err(|e| spec_err("model", e.to_string()))?;
        let spec = F::from_keys(keys, role)?;
        spec.check()?;
        Ok(spec.into())
    }
}

/// The fields a struct's derived `Deserialize` accepts (what `deny_unknown_fields` checks),
/// asked of the derive itself so a family writes its keys once.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Names<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Names<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Names(&mut fields));
    fields
}

/// Every key some family reads, `arch` first: what a `model:` mapping may hold at all.
pub fn model_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = vec!["arch"];
        for arch in ModelSpec::ARCHS {
            for key in ModelSpec::reader(arch).expect("registered").keys() {
                if !keys.contains(key) {
                    keys.push(key);
                }
            }
        }
        keys
    })
}

/// Whether `value` can be `key`'s while the mapping is parsed: of `arch`'s type where the
/// mapping named its arch before the key, else of the type of some family with that key (the
/// key's family is checked again when the mapping is read, [`ModelSpec::from_config`]).
pub fn check_key(arch: Option<&str>, key: &str, value: &Value) -> Result<(), String> {
    let readers: Vec<&dyn Reader> = match arch.and_then(ModelSpec::reader) {
        Some(r) => vec![r],
        None => ModelSpec::ARCHS
            .iter()
            .filter_map(|a| ModelSpec::reader(a))
            .collect(),
    };
    let mut first_err = None;
    for r in readers.into_iter().filter(|r| r.keys().contains(&key)) {
        match r.check_value(key, value) {
            Ok(()) => return Ok(()),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    first_err.map_or(Ok(()), Err)
}

impl ModelSpec {
    /// The spec a config's `model:` mapping describes (`arch`, [`DEFAULT_ARCH`] if absent, and
    /// that family's keys), `role`'s default for each absent key, checked by its family. An
    /// error names the key inside the mapping.
    pub fn from_config(model: &Mapping, role: Role) -> Result<ModelSpec, ModelError> {
        let arch = match model.get("arch") {
            None => DEFAULT_ARCH,
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(spec_err(
                    "arch",
                    format!("must be an architecture's name, got {other:?}"),
                ))
            }
        };
        let reader = ModelSpec::reader(arch).ok_or_else(|| {
            spec_err(
                "arch",
                format!(
                    "unknown architecture `{arch}` (known: {})",
                    ModelSpec::ARCHS.join(", ")
                ),
            )
        })?;
        let mut keys = Mapping::new();
        for (k, v) in model {
            let Some(k) = k.as_str() else {
                return Err(spec_err("model", format!("key {k:?} is not a name")));
            };
            if k == "arch" {
                continue;
            }
            if !reader.keys().contains(&k) {
                return Err(spec_err(
                    k,
                    format!(
                        "not a key of arch `{arch}` (its keys: {})",
                        reader.keys().join(", ")
                    ),
                ));
            }
            reader.check_value(k, v).map_err(|m| spec_err(k, m))?;
            keys.insert(Value::from(k), v.clone());
        }
        reader.read(keys, role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CnnSpec, Init, MlpSpec};

    fn map(yaml: &str) -> Mapping {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_familys_keys_are_its_structs_fields() {
        assert_eq!(
            field_names::<crate::mlp::MlpKeys>(),
            ["hidden", "dropout", "input_dropout", "init"]
        );
        assert_eq!(
            field_names::<crate::cnn::CnnKeys>(),
            [
                "channels",
                "kernel",
                "fc",
                "dropout",
                "init",
                "channels_last"
            ]
        );
        assert_eq!(
            model_keys(),
            [
                "arch",
                "hidden",
                "dropout",
                "input_dropout",
                "init",
                "channels",
                "kernel",
                "fc",
                "channels_last",
                "depth",
                "widths",
                "widen",
                "layers",
                "expand",
                "width",
                "blocks",
                "groups",
                "size",
                "file"
            ]
        );
    }

    #[test]
    fn absent_keys_take_the_roles_defaults() {
        let teacher = ModelSpec::from_config(&Mapping::new(), Role::Teacher).unwrap();
        let want = MlpSpec {
            hidden: vec![1200, 1200],
            dropout: 0.5,
            input_dropout: 0.2,
            init: Init::Torch,
        };
        assert_eq!(teacher, ModelSpec::Mlp(want));
        let student = ModelSpec::from_config(&map("{dropout: 0.1}"), Role::Student).unwrap();
        let want = MlpSpec {
            hidden: vec![800, 800],
            dropout: 0.1,
            input_dropout: 0.0,
            init: Init::Torch,
        };
        assert_eq!(student, ModelSpec::Mlp(want));
        let cnn = ModelSpec::from_config(&map("{arch: cnn, init: kaiming}"), Role::Student);
        let want = CnnSpec {
            channels: vec![32, 64],
            kernel: 3,
            fc: vec![256],
            dropout: 0.5,
            init: Init::Kaiming,
            channels_last: false,
        };
        assert_eq!(cnn.unwrap(), ModelSpec::Cnn(want));
    }

    #[test]
    fn errors_name_the_key_inside_the_mapping() {
        let err = |yaml: &str| {
            ModelSpec::from_config(&map(yaml), Role::Student)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("{arch: cnn, hidden: [3]}"),
            "hidden: not a key of arch `cnn` (its keys: channels, kernel, fc, dropout, init, \
             channels_last)"
        );
        assert_eq!(
            err("{arch: vit}"),
            "arch: unknown architecture `vit` (known: mlp, cnn, resnet, wrn, vgg, mobilenetv2, shufflev1, \
             shufflev2, torchscript)"
        );
        assert_eq!(
            err("{kernel: 3}"),
            "kernel: not a key of arch `mlp` (its keys: hidden, dropout, input_dropout, init)"
        );
        assert!(err("{hidden: [a]}").starts_with("hidden: invalid type: string \"a\""));
        assert_eq!(err("{hidden: [0]}"), "hidden[0]: must be > 0, got 0");
        assert!(err("{init: xavier}").starts_with("init: unknown initialisation `xavier`"));
    }

    #[test]
    fn parse_time_type_checks_use_the_arch_when_known() {
        let v: Value = serde_yaml::from_str("[3]").unwrap();
        assert!(check_key(Some("mlp"), "hidden", &v).is_ok());
        assert!(check_key(None, "hidden", &v).is_ok());
        // `kernel` is the CNN's, an integer.
        let v: Value = serde_yaml::from_str("x").unwrap();
        assert!(check_key(None, "kernel", &v).is_err());
        // A key of another family is left to `from_config`, which names the arch.
        assert!(check_key(Some("mlp"), "kernel", &v).is_ok());
    }

    /// What trial ids hash: the spec's JSON, `arch` first, as before the registry.
    #[test]
    fn specs_serialise_as_they_always_did() {
        let spec = ModelSpec::from_config(&Mapping::new(), Role::Student).unwrap();
        assert_eq!(
            serde_json::to_string(&spec).unwrap(),
            r#"{"arch":"mlp","hidden":[800,800],"dropout":0.0,"input_dropout":0.0,"init":"torch"}"#
        );
        let cnn = ModelSpec::from_config(&map("{arch: cnn}"), Role::Teacher).unwrap();
        assert_eq!(
            serde_json::to_string(&cnn).unwrap(),
            r#"{"arch":"cnn","channels":[32,64],"kernel":3,"fc":[256],"dropout":0.5,"init":"torch"}"#
        );
        let back: ModelSpec = serde_json::from_str(&serde_json::to_string(&cnn).unwrap()).unwrap();
        assert_eq!(back, cnn);
    }
}
