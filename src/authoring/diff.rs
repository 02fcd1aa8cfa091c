//! `dx-admission schema diff OLD NEW`: what changed between two schema versions for each kind
//! and component, classed as breaking (something valid under OLD is refused under NEW) or
//! compatible, so the DX team can write upgrade notes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use serde_json::Value;

use crate::policy::object::{Component, ResourceKind};
use crate::policy::schema::{DX_MAXIMUM, DX_MINIMUM, DX_RENAMED_KEYS, DX_TYPE, DX_UNKNOWN_KEYS, json_files};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Breaking,
    Compatible,
}

/// One change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: ResourceKind,
    pub component: Component,
    pub class: Class,
    pub text: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = match self.class {
            Class::Breaking => "breaking  ",
            Class::Compatible => "compatible",
        };
        write!(f, "{} {}: {class} {}", self.kind, self.component, self.text)
    }
}

/// The parsed JSON files of a schema directory, by relative path. A file that cannot be read or
/// parsed is an error naming it: read as missing, it would look like a removed schema.
fn documents(dir: &Path) -> Result<HashMap<String, Value>, String> {
    let files = json_files(dir).map_err(|e| e.to_string())?;
    let mut documents = HashMap::new();
    for (relative, path) in files {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value = serde_json::from_str(&text).map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?;
        documents.insert(relative, value);
    }
    Ok(documents)
}

/// Follows a local `$ref` (relative file and `#/` pointer), keeping sibling keywords.
fn resolve(documents: &HashMap<String, Value>, file: &str, schema: &Value, depth: usize) -> Value {
    let Some(reference) = schema.get("$ref").and_then(Value::as_str) else { return schema.clone() };
    if depth > 16 {
        return schema.clone();
    }
    let (target_file, pointer) = reference.split_once('#').unwrap_or((reference, ""));
    let path = if target_file.is_empty() {
        file.to_owned()
    } else {
        let joined = Path::new(file).parent().unwrap_or(Path::new("")).join(target_file);
        let mut parts: Vec<String> = Vec::new();
        for part in joined.components() {
            match part {
                std::path::Component::ParentDir => {
                    parts.pop();
                }
                std::path::Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                _ => {}
            }
        }
        parts.join("/")
    };
    let Some(target) = documents.get(&path).and_then(|d| d.pointer(pointer)) else { return schema.clone() };
    let mut merged = resolve(documents, &path, target, depth + 1);
    if let (Value::Object(merged), Value::Object(siblings)) = (&mut merged, schema) {
        for (key, value) in siblings.iter().filter(|(k, _)| *k != "$ref") {
            merged.insert(key.clone(), value.clone());
        }
    }
    merged
}

fn strings(value: Option<&Value>) -> BTreeSet<String> {
    value.and_then(Value::as_array).into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

fn number(value: Option<&Value>, dx_type: Option<&str>) -> Option<f64> {
    let value = value?;
    match (dx_type, value) {
        (Some("quantity"), Value::String(s)) => {
            s.parse::<crate::policy::values::Quantity>().ok().map(|q| q.as_nanos() as f64)
        }
        (Some("duration"), Value::String(s)) => {
            s.parse::<crate::policy::values::Duration>().ok().map(|d| d.as_nanos() as f64)
        }
        (_, Value::Number(n)) => n.as_f64(),
        _ => None,
    }
}

/// Changes of one key's schema.
fn compare_key(key: &str, old: &Value, new: &Value, out: &mut Vec<(Class, String)>) {
    let dx_type = |v: &Value| v.get(DX_TYPE).and_then(Value::as_str).map(str::to_owned);
    let (old_type, new_type) = (dx_type(old), dx_type(new));
    if old_type != new_type {
        let class = if new_type.is_none() { Class::Compatible } else { Class::Breaking };
        out.push((
            class,
            format!(
                "{key}: dxType {} -> {}",
                old_type.as_deref().unwrap_or("(none)"),
                new_type.as_deref().unwrap_or("(none)")
            ),
        ));
    }
    let (old_enum, new_enum) = (strings(old.get("enum")), strings(new.get("enum")));
    if old.get("enum").is_some() || new.get("enum").is_some() {
        let removed: Vec<_> = old_enum.difference(&new_enum).cloned().collect();
        let added: Vec<_> = new_enum.difference(&old_enum).cloned().collect();
        if new.get("enum").is_some() && old.get("enum").is_none() {
            out.push((
                Class::Breaking,
                format!("{key}: now limited to {}", new_enum.into_iter().collect::<Vec<_>>().join(", ")),
            ));
        } else if !removed.is_empty() {
            out.push((Class::Breaking, format!("{key}: no longer allows {}", removed.join(", "))));
        }
        if !added.is_empty() && old.get("enum").is_some() {
            out.push((Class::Compatible, format!("{key}: now also allows {}", added.join(", "))));
        }
    }
    let typed = new_type.as_deref();
    for (keyword, tighter_when_greater) in [
        (DX_MINIMUM, true),
        ("minimum", true),
        ("minLength", true),
        (DX_MAXIMUM, false),
        ("maximum", false),
        ("maxLength", false),
    ] {
        let (o, n) = (number(old.get(keyword), typed), number(new.get(keyword), typed));
        let shown = |v: Option<&Value>| {
            v.map_or("(none)".to_owned(), |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        };
        let change = format!("{key}: {keyword} {} -> {}", shown(old.get(keyword)), shown(new.get(keyword)));
        match (o, n) {
            (None, Some(_)) => out.push((Class::Breaking, change)),
            (Some(_), None) => out.push((Class::Compatible, change)),
            (Some(o), Some(n)) if (n > o) == tighter_when_greater && n != o => out.push((Class::Breaking, change)),
            (Some(o), Some(n)) if n != o => out.push((Class::Compatible, change)),
            _ => {}
        }
    }
    if old.get("pattern") != new.get("pattern") {
        out.push((Class::Breaking, format!("{key}: pattern changed")));
    }
}

/// Compares one ConfigMap schema; `(class, text)` per change.
fn compare_config_map(
    old: &Value,
    new: &Value,
    documents: (&HashMap<String, Value>, &HashMap<String, Value>),
    files: (&str, &str),
) -> Vec<(Class, String)> {
    let mut out = Vec::new();
    let props = |v: &Value| v.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    let (old_props, new_props) = (props(old), props(new));
    let (old_required, new_required) = (strings(old.get("required")), strings(new.get("required")));
    let renamed: BTreeMap<String, String> =
        new.get(DX_RENAMED_KEYS).and_then(|r| serde_json::from_value(r.clone()).ok()).unwrap_or_default();
    for (key, old_schema) in &old_props {
        match new_props.get(key) {
            None => match renamed.get(key) {
                Some(to) => out.push((Class::Breaking, format!("{key}: renamed to {to}; the old name is refused"))),
                None => out.push((Class::Breaking, format!("{key}: removed"))),
            },
            Some(new_schema) => {
                let old_schema = resolve(documents.0, files.0, old_schema, 0);
                let new_schema = resolve(documents.1, files.1, new_schema, 0);
                compare_key(key, &old_schema, &new_schema, &mut out);
                if new_required.contains(key) && !old_required.contains(key) {
                    out.push((Class::Breaking, format!("{key}: now required")));
                }
                if old_required.contains(key) && !new_required.contains(key) {
                    out.push((Class::Compatible, format!("{key}: no longer required")));
                }
            }
        }
    }
    for key in new_props.keys().filter(|k| !old_props.contains_key(*k)) {
        let renamed_from = renamed.iter().find(|(_, to)| *to == key).map(|(from, _)| from.clone());
        if renamed_from.is_some() {
            continue;
        }
        if new_required.contains(key) {
            out.push((Class::Breaking, format!("{key}: added, required")));
        } else {
            out.push((Class::Compatible, format!("{key}: added")));
        }
    }
    let strictness = |v: &Value| match v.get(DX_UNKNOWN_KEYS).and_then(Value::as_str) {
        Some("deny") => 2,
        Some("warn") => 1,
        _ => 0,
    };
    let (o, n) = (strictness(old), strictness(new));
    if o != n {
        let class = if n > o { Class::Breaking } else { Class::Compatible };
        out.push((
            class,
            format!("unknown keys: {} -> {}", ["allowed", "warned", "denied"][o], ["allowed", "warned", "denied"][n]),
        ));
    }
    out
}

/// Every change from version `old` to version `new` of the schema directory `dir`.
pub fn diff(dir: &Path, old: &str, new: &str) -> Result<Vec<Change>, String> {
    let documents = documents(dir)?;
    for version in [old, new] {
        if !documents.keys().any(|k| k.starts_with(&format!("{version}/"))) {
            return Err(format!("{}: no schemas for version {version}", dir.display()));
        }
    }
    let mut changes = Vec::new();
    for kind in ResourceKind::DX {
        for component in Component::ALL.into_iter().filter(|c| c.allowed_on(kind)) {
            let file = |version: &str| format!("{version}/{}/{component}.json", kind.schema_dir());
            let (old_file, new_file) = (file(old), file(new));
            let mut push = |class, text: String| changes.push(Change { kind, component, class, text });
            match (documents.get(&old_file), documents.get(&new_file)) {
                (None, None) => {}
                (None, Some(_)) => push(Class::Breaking, "a schema is added (objects were not checked before)".into()),
                (Some(_), None) => {
                    push(Class::Compatible, "the schema is removed (objects are no longer checked)".into())
                }
                (Some(o), Some(n)) if kind == ResourceKind::ConfigMap => {
                    for (class, text) in compare_config_map(o, n, (&documents, &documents), (&old_file, &new_file)) {
                        push(class, text);
                    }
                }
                (Some(o), Some(n)) => {
                    let (o, n) = (resolve(&documents, &old_file, o, 0), resolve(&documents, &new_file, n, 0));
                    let strip = |mut v: Value| {
                        if let Value::Object(map) = &mut v {
                            map.remove("title");
                            map.remove("description");
                        }
                        v
                    };
                    if strip(o) != strip(n) {
                        push(Class::Breaking, "the workload schema changed; review it by hand".into());
                    }
                }
            }
        }
    }
    Ok(changes)
}

/// The report: one line per change, then a summary.
pub fn render(old: &str, new: &str, changes: &[Change]) -> String {
    let mut text: String = changes.iter().map(|c| format!("{c}\n")).collect();
    let breaking = changes.iter().filter(|c| c.class == Class::Breaking).count();
    text.push_str(&format!(
        "{breaking} breaking, {} compatible changes from {old} to {new}\n",
        changes.len() - breaking
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_to_v2_reports_the_rename_and_the_new_required_key_as_breaking() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let changes = diff(&dir, "v1", "v2").unwrap();
        let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert!(
            lines.contains(
                &"ConfigMap global: breaking   logLevel: renamed to log.level; the old name is refused".to_owned()
            ),
            "{lines:#?}"
        );
        assert!(
            lines.contains(&"ConfigMap global: breaking   dx.cluster.name: added, required".to_owned()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(
                &"ConfigMap core: breaking   logLevel: renamed to log.level; the old name is refused".to_owned()
            ),
            "{lines:#?}"
        );
        assert!(lines.contains(&"ConfigMap global: compatible dam.cdn.url: added".to_owned()), "{lines:#?}");
        assert_eq!(
            changes.len(),
            9,
            "one rename per ConfigMap, the new required key, the new optional one: {lines:#?}"
        );
        assert_eq!(changes.iter().filter(|c| c.class == Class::Breaking).count(), 8);
        assert!(render("v1", "v2", &changes).ends_with("8 breaking, 1 compatible changes from v1 to v2\n"));
        assert!(diff(&dir, "v2", "v2").unwrap().is_empty());
    }

    #[test]
    fn a_schema_file_that_does_not_parse_is_an_error_naming_it_not_a_removal() {
        let dir = tempfile::tempdir().unwrap();
        for version in ["v1", "v2"] {
            std::fs::create_dir_all(dir.path().join(version).join("configmap")).unwrap();
        }
        std::fs::write(dir.path().join("v1/configmap/core.json"), r#"{"type": "object"}"#).unwrap();
        std::fs::write(dir.path().join("v2/configmap/core.json"), r#"{"type": "object""#).unwrap();
        let error = diff(dir.path(), "v1", "v2").unwrap_err();
        let file = dir.path().join("v2/configmap/core.json");
        assert_eq!(
            error,
            format!("{}: not valid JSON: EOF while parsing an object at line 1 column 17", file.display())
        );
    }

    #[test]
    fn narrowing_is_breaking_and_widening_compatible() {
        let mut out = Vec::new();
        let old = serde_json::json!({"dxType": "integer", "dxMinimum": 1, "dxMaximum": 10, "enum": ["a", "b"]});
        let new = serde_json::json!({"dxType": "integer", "dxMinimum": 2, "dxMaximum": 20, "enum": ["a", "c"]});
        compare_key("k", &old, &new, &mut out);
        assert_eq!(
            out,
            vec![
                (Class::Breaking, "k: no longer allows b".to_owned()),
                (Class::Compatible, "k: now also allows c".to_owned()),
                (Class::Breaking, "k: dxMinimum 1 -> 2".to_owned()),
                (Class::Compatible, "k: dxMaximum 10 -> 20".to_owned()),
            ]
        );
        let mut out = Vec::new();
        compare_key(
            "q",
            &serde_json::json!({"dxType": "quantity", "dxMaximum": "1Gi"}),
            &serde_json::json!({"dxType": "quantity", "dxMaximum": "512Mi"}),
            &mut out,
        );
        assert_eq!(out, vec![(Class::Breaking, "q: dxMaximum 1Gi -> 512Mi".to_owned())]);
    }
}
