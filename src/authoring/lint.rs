//! `dx-admission schema lint`: what the server's load checks (every file compiles, `$ref`s
//! resolve locally, the index is consistent), plus what it cannot: misspelt keywords (JSON
//! Schema ignores unknown keywords), unknown formats, properties without a description, and
//! shared files nothing references. Messages are `file:line: level: text`.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde_json::Value;

use crate::policy::schema::{DX_DOCUMENT, DX_KEYWORDS, SchemaSet, json_files};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Warning,
    Error,
}

/// One lint message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Message {
    pub file: String,
    pub line: usize,
    pub level: Level,
    pub text: String,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Warning => "warning",
            Level::Error => "error",
        };
        write!(f, "{}:{}: {level}: {}", self.file, self.line, self.text)
    }
}

/// JSON Schema 2020-12 keywords, annotations included.
const STANDARD: &[&str] = &[
    "$schema",
    "$id",
    "$ref",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$vocabulary",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "items",
    "prefixItems",
    "contains",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "format",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
];
/// The DX vocabulary (schemas/README.md).
const DX: &[&str] = &DX_KEYWORDS;
/// Formats the validator checks.
const FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];
/// Keywords whose value is one schema, a map of schemas, or a list of schemas.
const ONE: &[&str] = &[
    "additionalProperties",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "items",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "contentSchema",
    DX_DOCUMENT,
];
const MAP: &[&str] = &["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"];
const LIST: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];

/// The line of the JSON pointer's target in `text`, found by following its keys in order.
fn line_of(text: &str, pointer: &[String]) -> usize {
    let mut at = 0;
    for key in pointer.iter().filter(|k| k.parse::<usize>().is_err()) {
        if let Some(found) = text[at..].find(&format!("\"{key}\"")) {
            at += found;
        }
    }
    text[..at].matches('\n').count() + 1
}

struct Linter<'a> {
    file: &'a str,
    text: &'a str,
    out: &'a mut Vec<Message>,
    refs: &'a mut BTreeSet<String>,
}

impl Linter<'_> {
    fn report(&mut self, pointer: &[String], level: Level, text: String) {
        self.out.push(Message { file: self.file.to_owned(), line: line_of(self.text, pointer), level, text });
    }

    fn schema(&mut self, value: &Value, pointer: &mut Vec<String>) {
        let Value::Object(map) = value else { return };
        for (key, child) in map {
            pointer.push(key.clone());
            if !STANDARD.contains(&key.as_str()) && !DX.contains(&key.as_str()) {
                let near = STANDARD.iter().chain(DX).min_by_key(|k| strsim::levenshtein(k, key)).copied().unwrap_or("");
                let hint = if strsim::levenshtein(near, key) <= 2 {
                    format!(" (did you mean {near}?)")
                } else {
                    String::new()
                };
                self.report(
                    pointer,
                    Level::Error,
                    format!("unknown keyword {key:?}{hint}; JSON Schema would ignore it"),
                );
            }
            if key == "format" && child.as_str().is_some_and(|f| !FORMATS.contains(&f)) {
                self.report(pointer, Level::Error, format!("unknown format {child}; use dxType for DX value types"));
            }
            if key == "$ref"
                && let Some(target) = child.as_str()
            {
                self.refs.insert(target.split('#').next().unwrap_or_default().to_owned());
            }
            if ONE.contains(&key.as_str()) {
                self.schema(child, pointer);
            } else if MAP.contains(&key.as_str()) {
                for (name, sub) in child.as_object().into_iter().flatten() {
                    pointer.push(name.clone());
                    if key == "properties" && sub.get("description").is_none() {
                        self.report(pointer, Level::Error, format!("property {name:?} has no description"));
                    }
                    self.schema(sub, pointer);
                    pointer.pop();
                }
            } else if LIST.contains(&key.as_str()) {
                for (i, sub) in child.as_array().into_iter().flatten().enumerate() {
                    pointer.push(i.to_string());
                    self.schema(sub, pointer);
                    pointer.pop();
                }
            }
            pointer.pop();
        }
    }
}

/// Lints a schema directory; messages sorted by file and line.
pub fn lint(dir: &Path) -> Vec<Message> {
    let mut out = Vec::new();
    if let Err(error) = SchemaSet::load(dir) {
        out.push(Message { file: dir.display().to_string(), line: 0, level: Level::Error, text: error.to_string() });
    }
    let files = json_files(dir).unwrap_or_default();
    let mut refs = BTreeSet::new();
    for (relative, path) in &files {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
        let shown = path.display().to_string();
        let mut linter = Linter { file: &shown, text: &text, out: &mut out, refs: &mut refs };
        linter.schema(&value, &mut Vec::new());
        // Resolve relative references against the referring file.
        let base = Path::new(relative).parent().unwrap_or(Path::new(""));
        let resolved: BTreeSet<String> =
            std::mem::take(&mut refs).into_iter().filter(|r| !r.is_empty()).map(|r| normalise(&base.join(r))).collect();
        refs = resolved.into_iter().chain(refs).collect();
    }
    let referenced: BTreeSet<String> = refs;
    for (relative, path) in &files {
        if relative.starts_with("common/") && !referenced.contains(relative) {
            out.push(Message {
                file: path.display().to_string(),
                line: 1,
                level: Level::Warning,
                text: "no schema references this shared file".into(),
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

fn normalise(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &to.join(entry.file_name()));
            } else {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    #[test]
    fn the_shipped_schemas_lint_clean() {
        let messages = lint(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"));
        assert!(messages.is_empty(), "{messages:#?}");
    }

    #[test]
    fn typos_formats_descriptions_and_orphans_are_reported_with_lines() {
        let dir = tempfile::tempdir().unwrap();
        copy(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"), dir.path());
        let file = dir.path().join("v2/configmap/ring-api.json");
        let text = std::fs::read_to_string(&file).unwrap();
        let text = text.replacen("\"dxType\": \"json\"", "\"dxTpye\": \"json\"", 1);
        std::fs::write(&file, &text).unwrap();
        let core = dir.path().join("v2/configmap/core.json");
        let mut value: Value = serde_json::from_str(&std::fs::read_to_string(&core).unwrap()).unwrap();
        value["properties"]["cache.entries"].as_object_mut().unwrap().remove("description");
        value["properties"]["cache.entries"]["format"] = Value::String("colour".into());
        std::fs::write(&core, serde_json::to_string_pretty(&value).unwrap()).unwrap();
        std::fs::write(dir.path().join("common/unused.json"), "{}").unwrap();
        let shown: Vec<String> = lint(dir.path()).iter().map(ToString::to_string).collect();
        let root = dir.path().display().to_string();
        let expect = |suffix: &str| {
            assert!(
                shown.iter().any(|m| m.starts_with(&root) && m.ends_with(suffix)),
                "no message ending {suffix:?} in {shown:#?}"
            );
        };
        expect("error: unknown keyword \"dxTpye\" (did you mean dxType?); JSON Schema would ignore it");
        expect("error: property \"cache.entries\" has no description");
        expect("error: unknown format \"colour\"; use dxType for DX value types");
        expect("warning: no schema references this shared file");
        let typo = shown.iter().find(|m| m.contains("dxTpye")).unwrap();
        assert!(typo.contains("v2/configmap/ring-api.json:"), "{typo}");
        let line: usize = typo.split(':').nth(1).unwrap().parse().unwrap();
        assert_eq!(text.lines().nth(line - 1).map(|l| l.contains("dxTpye")), Some(true), "{typo}");
    }
}
