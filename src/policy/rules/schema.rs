//! Checks driven by the versioned schemas.

use std::collections::BTreeMap;

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use super::{Context, Findings};
use crate::policy::annotations::SCHEMA_VERSION;
use crate::policy::object::Object;
use crate::policy::path::FieldPath;
use crate::policy::schema::{DocumentSchema, SchemaVersion, VersionLookup};

/// The version's schema for this object, when the version is known and has one.
fn document<'a>(ctx: &Context<'a>) -> Option<(&'a SchemaVersion, &'a DocumentSchema)> {
    let VersionLookup::Found(version) = ctx.version else { return None };
    let schema = version.schema(ctx.object.kind(), ctx.component?)?;
    Some((version, schema))
}

pub fn version_known(ctx: &Context<'_>, out: &mut Findings<'_>) {
    if let VersionLookup::Unknown { requested } = ctx.version {
        let known: Vec<&str> = ctx.schemas.version_names().collect();
        out.add(
            FieldPath::root("metadata").field("annotations").key(SCHEMA_VERSION),
            format!("{requested:?} is not a known schema version (known: {})", known.join(", ")),
        );
    }
}

/// The document a schema describes: a ConfigMap's `data`, a workload's whole object.
fn instance(object: &Object) -> (FieldPath, Value) {
    match object {
        Object::ConfigMap(map) => {
            let data = map.data.iter().flatten().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            (FieldPath::root("data"), Value::Object(data))
        }
        other => (FieldPath::default(), other.to_json()),
    }
}

pub fn matches(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let Some((_, schema)) = document(ctx) else { return };
    let (base, instance) = instance(ctx.object);
    // Most objects pass: the yes/no check stops at the first error and builds none.
    if schema.validator.is_valid(&instance) {
        return;
    }
    let is_configmap = matches!(ctx.object, Object::ConfigMap(_));
    let mut errors: Vec<_> = schema.validator.iter_errors(&instance).collect();
    errors.sort_by(|a, b| a.instance_path().as_str().cmp(b.instance_path().as_str()));
    for error in errors {
        let mut pointer = error.instance_path().as_str().to_owned();
        if let ValidationErrorKind::Required { property } = error.kind() {
            let name = property.as_str().unwrap_or_default();
            pointer = format!("{pointer}/{}", name.replace('~', "~0").replace('/', "~1"));
        }
        let path = if is_configmap {
            // Every segment below `data` is a key.
            pointer.split('/').skip(1).fold(base.clone(), |p, s| p.key(&s.replace("~1", "/").replace("~0", "~")))
        } else {
            FieldPath::from_pointer(&pointer)
        };
        let message = match error.kind() {
            ValidationErrorKind::Required { .. } => "is required but missing".to_owned(),
            ValidationErrorKind::Enum { options } => {
                let options: Vec<String> = options
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_owned))
                    .collect();
                format!("{} is not one of: {}", error.instance(), options.join(", "))
            }
            ValidationErrorKind::Custom { message, .. } => message.clone(),
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                format!("has keys the schema does not allow: {}", unexpected.join(", "))
            }
            _ => error.to_string(),
        };
        out.add_with_hint(path, message, format!("see schemas/{}", schema.file));
    }
}

pub fn unknown_keys(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let Some((version, schema)) = document(ctx) else { return };
    let Some(severity) = schema.unknown_keys else { return };
    let Object::ConfigMap(map) = ctx.object else { return };
    let keys = map.data.iter().flat_map(BTreeMap::keys).chain(map.binary_data.iter().flat_map(BTreeMap::keys));
    let section =
        |key: &String| if map.data.as_ref().is_some_and(|d| d.contains_key(key)) { "data" } else { "binaryData" };
    for key in keys {
        if schema.declares_key(key) || schema.renamed_keys.contains_key(key) {
            continue;
        }
        let component = ctx.component.map_or("", |c| c.as_str());
        let hint = closest(key, schema).map(|near| format!("did you mean {near:?}?"));
        out.add_requesting(
            FieldPath::root(section(key)).key(key),
            format!("{key:?} is not a key of the {component} ConfigMap in schema {}", version.name),
            hint,
            severity,
        );
    }
}

/// The declared key nearest to a misspelt one, if it is near enough to be a likely typo.
fn closest<'a>(key: &str, schema: &'a DocumentSchema) -> Option<&'a str> {
    let limit = (key.chars().count() / 3).clamp(1, 3);
    schema
        .declared_keys()
        .map(|known| (strsim::levenshtein(key, known), known))
        .filter(|(distance, _)| *distance <= limit)
        .min()
        .map(|(_, known)| known)
}

pub fn renamed_keys(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let Some((version, schema)) = document(ctx) else { return };
    let Object::ConfigMap(map) = ctx.object else { return };
    for key in map.data.iter().flat_map(BTreeMap::keys) {
        if let Some(new) = schema.renamed_keys.get(key) {
            out.add_with_hint(
                FieldPath::root("data").key(key),
                format!("was renamed to {new:?} in schema {}", version.name),
                format!("rename data[{key}] to data[{new}]; the value can stay"),
            );
        }
    }
}
