//! The DX vocabulary: keywords that let a schema say what a ConfigMap string really holds.
//!
//! ConfigMap values are always strings, but DX configuration is typed. On a string instance:
//! - `dxType`: `integer`, `number`, `boolean`, `quantity`, `duration`, `url`, `json` or `yaml`;
//!   the string must parse as that type.
//! - `dxMinimum` / `dxMaximum`: inclusive bounds on the parsed value, written as a number for
//!   `integer`/`number`, and as a quantity or duration string for those types.
//! - `dxDocument`: for `json`/`yaml`, a sub-schema the parsed document must match.
//!
//! Non-string instances are left to the standard keywords (`type`). The reference is
//! `schemas/README.md`.

use std::str::FromStr;

use jsonschema::{Keyword, ValidationError, Validator};
use serde_json::{Map, Value};

use crate::policy::values::{Duration, Quantity};

/// The keyword that carries the type; the others are read from beside it.
pub const DX_TYPE: &str = "dxType";
pub const DX_MINIMUM: &str = "dxMinimum";
pub const DX_MAXIMUM: &str = "dxMaximum";
pub const DX_DOCUMENT: &str = "dxDocument";
/// Keywords that are only meaningful beside `dxType`.
pub const DX_MODIFIERS: [&str; 3] = [DX_MINIMUM, DX_MAXIMUM, DX_DOCUMENT];
/// On a ConfigMap schema's root: what an undeclared key is (`deny`, `warn` or `allow`).
pub const DX_UNKNOWN_KEYS: &str = "dxUnknownKeys";
/// On a ConfigMap schema's root: keys renamed in this version, old name to new.
pub const DX_RENAMED_KEYS: &str = "dxRenamedKeys";
/// On a ConfigMap schema's property: the components whose pods use the key (a key without it
/// counts for every component). A workload that takes the whole ConfigMap is stamped with a
/// checksum of only the keys its component uses.
pub const DX_CONSUMERS: &str = "dxConsumers";
/// The whole DX vocabulary, as `schema lint` knows it (`schemas/README.md`).
pub const DX_KEYWORDS: [&str; 7] =
    [DX_TYPE, DX_MINIMUM, DX_MAXIMUM, DX_DOCUMENT, DX_UNKNOWN_KEYS, DX_RENAMED_KEYS, DX_CONSUMERS];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DxType {
    Integer,
    Number,
    Boolean,
    Quantity,
    Duration,
    Url,
    Json,
    Yaml,
}

impl DxType {
    const NAMES: &'static str = "integer, number, boolean, quantity, duration, url, json, yaml";

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "integer" => Self::Integer,
            "number" => Self::Number,
            "boolean" => Self::Boolean,
            "quantity" => Self::Quantity,
            "duration" => Self::Duration,
            "url" => Self::Url,
            "json" => Self::Json,
            "yaml" => Self::Yaml,
            _ => return None,
        })
    }
}

/// A bound on a parsed value, kept with the text the author wrote for messages.
#[derive(Debug)]
struct Bound {
    value: f64,
    exact: i128,
    text: String,
}

/// A compiled `dxType` keyword with its modifiers.
struct TypedString {
    ty: DxType,
    minimum: Option<Bound>,
    maximum: Option<Bound>,
    document: Option<Validator>,
}

/// Builds the `dxType` keyword. `compile` compiles `dxDocument` sub-schemas with the same
/// options (and so the same vocabulary and `$ref` resolution) as the enclosing file.
pub fn typed_string<'a>(
    parent: &'a Map<String, Value>,
    value: &'a Value,
    compile: &dyn Fn(&Value) -> Result<Validator, String>,
) -> Result<Box<dyn for<'i> Keyword<'i>>, ValidationError<'a>> {
    let name = value
        .as_str()
        .ok_or_else(|| ValidationError::custom(format!("dxType must be a string, one of: {}", DxType::NAMES)))?;
    let ty = DxType::parse(name)
        .ok_or_else(|| ValidationError::custom(format!("unknown dxType {name:?} (known: {})", DxType::NAMES)))?;
    let bound = |keyword: &str| -> Result<Option<Bound>, ValidationError<'a>> {
        parent.get(keyword).map(|raw| parse_bound(ty, keyword, raw)).transpose()
    };
    let document = match parent.get(DX_DOCUMENT) {
        None => None,
        Some(_) if !matches!(ty, DxType::Json | DxType::Yaml) => {
            return Err(ValidationError::custom("dxDocument needs dxType json or yaml"));
        }
        Some(schema) => Some(compile(schema).map_err(|e| ValidationError::custom(format!("dxDocument: {e}")))?),
    };
    Ok(Box::new(TypedString { ty, minimum: bound(DX_MINIMUM)?, maximum: bound(DX_MAXIMUM)?, document }))
}

fn parse_bound<'a>(ty: DxType, keyword: &str, raw: &Value) -> Result<Bound, ValidationError<'a>> {
    let text = match raw {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let invalid = |why: &str| ValidationError::custom(format!("{keyword} {text:?} {why}"));
    match (ty, raw) {
        (DxType::Integer | DxType::Number, Value::Number(n)) => {
            let value = n.as_f64().ok_or_else(|| invalid("is not a finite number"))?;
            Ok(Bound { value, exact: 0, text })
        }
        (DxType::Quantity, Value::String(s)) => {
            let q = Quantity::from_str(s).map_err(|e| invalid(&e.to_string()))?;
            Ok(Bound { value: q.as_f64(), exact: q.as_nanos(), text })
        }
        (DxType::Duration, Value::String(s)) => {
            let d = Duration::from_str(s).map_err(|e| invalid(&e.to_string()))?;
            Ok(Bound { value: 0.0, exact: d.as_nanos(), text })
        }
        _ => Err(invalid(
            "does not apply to this dxType (bounds are numbers for integer/number, strings for quantity/duration)",
        )),
    }
}

/// A parsed value, ready for bound checks.
enum Parsed {
    Float(f64),
    Exact(i128),
    Other,
}

impl TypedString {
    fn check(&self, text: &str) -> Result<(), String> {
        let shown = || format!("{text:?}");
        let parsed = match self.ty {
            DxType::Integer => text
                .parse::<i64>()
                .map(|v| Parsed::Float(v as f64))
                .map_err(|_| format!("{} is not an integer", shown()))?,
            DxType::Number => match text.parse::<f64>() {
                Ok(v) if v.is_finite() => Parsed::Float(v),
                _ => return Err(format!("{} is not a number", shown())),
            },
            DxType::Boolean => match text {
                "true" | "false" => Parsed::Other,
                _ => return Err(format!("{} is not a boolean (use \"true\" or \"false\")", shown())),
            },
            DxType::Quantity => Quantity::from_str(text)
                .map(|q| Parsed::Exact(q.as_nanos()))
                .map_err(|e| format!("{} is not a Kubernetes quantity: it {e}", shown()))?,
            DxType::Duration => Duration::from_str(text)
                .map(|d| Parsed::Exact(d.as_nanos()))
                .map_err(|e| format!("{} is not a duration: it {e}", shown()))?,
            DxType::Url => {
                check_url(text).map_err(|why| format!("{} is not an http(s) URL: {why}", shown()))?;
                Parsed::Other
            }
            DxType::Json | DxType::Yaml => {
                let document: Value = if self.ty == DxType::Json {
                    serde_json::from_str(text).map_err(|e| format!("is not valid JSON: {e}"))?
                } else {
                    serde_yaml_ng::from_str(text).map_err(|e| format!("is not valid YAML: {e}"))?
                };
                if let Some(validator) = &self.document {
                    let problems: Vec<String> = validator
                        .iter_errors(&document)
                        .map(|error| {
                            let at = error.instance_path().as_str();
                            let at = if at.is_empty() { "/" } else { at };
                            format!("at {at}: {error}")
                        })
                        .collect();
                    if !problems.is_empty() {
                        return Err(format!("document does not match its schema: {}", problems.join("; ")));
                    }
                }
                Parsed::Other
            }
        };
        let out_of_range = |bound: &Bound, word: &str| format!("{} is {word} than the {} allowed", shown(), bound.text);
        match parsed {
            Parsed::Float(v) => {
                if let Some(min) = self.minimum.as_ref().filter(|b| v < b.value) {
                    return Err(format!("{} is below the minimum {}", shown(), min.text));
                }
                if let Some(max) = self.maximum.as_ref().filter(|b| v > b.value) {
                    return Err(format!("{} is above the maximum {}", shown(), max.text));
                }
            }
            Parsed::Exact(v) => {
                if let Some(min) = self.minimum.as_ref().filter(|b| v < b.exact) {
                    return Err(out_of_range(min, "less"));
                }
                if let Some(max) = self.maximum.as_ref().filter(|b| v > b.exact) {
                    return Err(out_of_range(max, "more"));
                }
            }
            Parsed::Other => {}
        }
        Ok(())
    }
}

fn check_url(text: &str) -> Result<(), &'static str> {
    let uri = fluent_uri::Uri::parse(text).map_err(|_| "it does not parse")?;
    if !matches!(uri.scheme().as_str().to_ascii_lowercase().as_str(), "http" | "https") {
        return Err("the scheme must be http or https");
    }
    match uri.authority() {
        Some(authority) if !authority.host().is_empty() => Ok(()),
        _ => Err("it has no host"),
    }
}

impl<'i> Keyword<'i> for TypedString {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        match instance {
            Value::String(text) => self.check(text).map_err(ValidationError::custom),
            _ => Ok(()),
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        match instance {
            Value::String(text) => self.check(text).is_ok(),
            _ => true,
        }
    }
}

/// Validates that `dxMinimum`, `dxMaximum` and `dxDocument` stand beside a `dxType`.
pub fn modifier<'a>(
    parent: &'a Map<String, Value>,
    name: &str,
) -> Result<Box<dyn for<'i> Keyword<'i>>, ValidationError<'a>> {
    if parent.contains_key(DX_TYPE) {
        Ok(Box::new(Inert))
    } else {
        Err(ValidationError::custom(format!("{name} needs a dxType beside it")))
    }
}

/// A keyword whose work is done by its `dxType` sibling.
struct Inert;

impl<'i> Keyword<'i> for Inert {
    fn validate(&self, _: &'i Value) -> Result<(), ValidationError<'i>> {
        Ok(())
    }

    fn is_valid(&self, _: &'i Value) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use serde_json::{Value, json};

    /// Every error message for `value` under a one-keyword schema.
    fn check(schema: Value, value: &str) -> Vec<String> {
        let validator = super::super::load::options("file:///schemas/test.json".into(), &Arc::new(HashMap::new()))
            .build(&schema)
            .expect("schema compiles");
        validator.iter_errors(&json!(value)).map(|e| e.to_string()).collect()
    }

    #[test]
    fn each_dx_type_accepts_its_form_and_names_what_is_wrong() {
        let cases: Vec<(Value, &str, &[&str])> = vec![
            (json!({"dxType": "integer"}), "42", &[]),
            (json!({"dxType": "integer"}), "4.2", &["\"4.2\" is not an integer"]),
            (json!({"dxType": "integer", "dxMinimum": 1, "dxMaximum": 10}), "11", &["\"11\" is above the maximum 10"]),
            (json!({"dxType": "number", "dxMinimum": 0.5}), "0.25", &["\"0.25\" is below the minimum 0.5"]),
            (json!({"dxType": "number"}), "1e3", &[]),
            (json!({"dxType": "number"}), "NaN", &["\"NaN\" is not a number"]),
            (json!({"dxType": "boolean"}), "true", &[]),
            (json!({"dxType": "boolean"}), "yes", &["\"yes\" is not a boolean (use \"true\" or \"false\")"]),
            (json!({"dxType": "quantity", "dxMaximum": "1Gi"}), "1024Mi", &[]),
            (json!({"dxType": "quantity", "dxMinimum": "1Gi"}), "512Mi", &["\"512Mi\" is less than the 1Gi allowed"]),
            (json!({"dxType": "duration", "dxMinimum": "1s"}), "500ms", &["\"500ms\" is less than the 1s allowed"]),
            (json!({"dxType": "url"}), "https://dx.example.com:443/wps", &[]),
            (
                json!({"dxType": "url"}),
                "ftp://dx.example.com",
                &["\"ftp://dx.example.com\" is not an http(s) URL: the scheme must be http or https"],
            ),
            (json!({"dxType": "url"}), "http:///path", &["\"http:///path\" is not an http(s) URL: it has no host"]),
            (
                json!({"dxType": "json", "dxDocument": {"type": "array", "maxItems": 1}}),
                "[1, 2]",
                &["document does not match its schema: at /: [1,2] has more than 1 item"],
            ),
            (json!({"dxType": "json"}), "{", &["is not valid JSON: EOF while parsing an object at line 1 column 1"]),
            (
                json!({"dxType": "yaml", "dxDocument": {"required": ["host"]}}),
                "port: 1",
                &["document does not match its schema: at /: \"host\" is a required property"],
            ),
        ];
        for (schema, value, expected) in cases {
            assert_eq!(check(schema.clone(), value), expected, "{schema} on {value:?}");
        }
        // Non-strings are left to the standard `type` keyword.
        let validator = super::super::load::options("file:///schemas/t.json".into(), &Arc::new(HashMap::new()))
            .build(&json!({"dxType": "integer"}))
            .unwrap();
        assert!(validator.is_valid(&json!(7)));
    }

    #[test]
    fn misuse_of_the_vocabulary_does_not_compile() {
        let build = |schema: Value| {
            super::super::load::options("file:///schemas/t.json".into(), &Arc::new(HashMap::new()))
                .build(&schema)
                .err()
                .map(|e| e.to_string())
        };
        assert!(build(json!({"dxType": "colour"})).unwrap().contains("unknown dxType \"colour\""));
        assert!(build(json!({"dxType": 5})).unwrap().contains("dxType must be a string"));
        assert!(build(json!({"dxMinimum": 1})).unwrap().contains("dxMinimum needs a dxType beside it"));
        assert!(
            build(json!({"dxType": "quantity", "dxMinimum": "4GB"}))
                .unwrap()
                .contains("dxMinimum \"4GB\" has an unknown unit suffix")
        );
        assert!(
            build(json!({"dxType": "integer", "dxMinimum": "1"})).unwrap().contains("does not apply to this dxType")
        );
        assert!(
            build(json!({"dxType": "integer", "dxDocument": {}}))
                .unwrap()
                .contains("dxDocument needs dxType json or yaml")
        );
    }
}
