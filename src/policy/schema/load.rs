//! Reading and compiling a schema directory, all or nothing.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonschema::{Draft, Retrieve, Uri, Validator};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::keywords::{self, DX_CONSUMERS, DX_MODIFIERS, DX_RENAMED_KEYS, DX_TYPE, DX_UNKNOWN_KEYS};
use super::{DocumentSchema, SchemaSet, SchemaVersion};
use crate::policy::object::{Component, ResourceKind};
use crate::policy::settings::Severity;

/// Why a schema directory was refused. Each variant names the file to fix.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: not valid JSON: {message}")]
    Json { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}: {message}")]
    Index { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Layout { path: PathBuf, message: String },
    #[error("{path}: schema does not compile: {message}")]
    Compile { path: PathBuf, message: String },
}

/// `index.yaml`: the versions in order, the default, and notes for each.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    default: String,
    versions: Vec<IndexVersion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexVersion {
    name: String,
    #[serde(default)]
    notes: String,
}

/// The directory holding definitions shared between versions.
const COMMON_DIR: &str = "common";
const INDEX_FILE: &str = "index.yaml";
/// The base of every file's URI; relative `$ref`s resolve against it.
const BASE: &str = "file:///schemas/";

impl SchemaSet {
    /// Loads and compiles every schema under `dir`. Any error refuses the whole set.
    pub fn load(dir: &Path) -> Result<Self, SchemaError> {
        let index_path = dir.join(INDEX_FILE);
        let index_text = read(&index_path)?;
        let index: Index = serde_yaml_ng::from_str(&index_text)
            .map_err(|e| SchemaError::Index { path: index_path.clone(), message: e.to_string() })?;
        let index_error = |message: String| SchemaError::Index { path: index_path.clone(), message };
        if index.versions.is_empty() {
            return Err(index_error("lists no versions".into()));
        }
        let mut names = BTreeSet::new();
        for version in &index.versions {
            if version.name.is_empty() || version.name.contains(['/', '\\']) || version.name == COMMON_DIR {
                return Err(index_error(format!("{:?} is not a usable version name", version.name)));
            }
            if !names.insert(version.name.as_str()) {
                return Err(index_error(format!("version {} is listed twice", version.name)));
            }
        }
        if !names.contains(index.default.as_str()) {
            return Err(index_error(format!(
                "default version {} is not among the versions ({})",
                index.default,
                names.iter().copied().collect::<Vec<_>>().join(", ")
            )));
        }

        let mut files = BTreeMap::new();
        collect_json(dir, &mut files)?;
        let mut hasher = DefaultHasher::new();
        index_text.hash(&mut hasher);
        for (relative, (_, text)) in &files {
            relative.hash(&mut hasher);
            text.hash(&mut hasher);
        }
        let documents: Arc<HashMap<String, Value>> =
            Arc::new(files.iter().map(|(relative, (value, _))| (format!("{BASE}{relative}"), value.clone())).collect());

        let mut versions = BTreeMap::new();
        for entry in &index.versions {
            let mut schemas = BTreeMap::new();
            for (relative, (value, _)) in files.iter().filter(|(r, _)| top_dir(r) == entry.name) {
                let (kind, component) = classify(dir, relative)?;
                let compiled = compile(dir, relative, value, &documents)?;
                schemas.insert((kind, component), compiled);
            }
            versions.insert(
                entry.name.clone(),
                SchemaVersion { name: entry.name.clone(), notes: entry.notes.clone(), schemas },
            );
        }
        for relative in files.keys() {
            let top = top_dir(relative);
            if top != COMMON_DIR && !names.contains(top) {
                return Err(SchemaError::Layout {
                    path: dir.join(relative),
                    message: format!(
                        "{top}/ is not a version listed in {INDEX_FILE}; list it there, or put shared definitions in {COMMON_DIR}/"
                    ),
                });
            }
        }
        let order = index.versions.iter().map(|v| v.name.clone()).collect();
        Ok(Self { default_version: index.default, versions, order, fingerprint: hasher.finish(), files: files.len() })
    }
}

fn read(path: &Path) -> Result<String, SchemaError> {
    std::fs::read_to_string(path).map_err(|source| SchemaError::Io { path: path.to_owned(), source })
}

/// The first path segment of a relative path.
fn top_dir(relative: &str) -> &str {
    relative.split('/').next().unwrap_or("")
}

/// Every `*.json` file below `root`, as (relative path with `/`, path), sorted.
///
/// Names starting with `.` are skipped: a mounted ConfigMap keeps its real files in `..data`
/// and timestamped `..` directories, and exposes them through symlinks that are followed.
/// A ConfigMap's keys cannot hold `/`, so in a file name `__` stands for `/`
/// (`v2__configmap__core.json` is `v2/configmap/core.json`).
pub fn json_files(root: &Path) -> Result<Vec<(String, PathBuf)>, SchemaError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), SchemaError> {
        let io = |source| SchemaError::Io { path: dir.to_owned(), source };
        let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(io)?.collect::<Result<_, _>>().map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let metadata = std::fs::metadata(&path).map_err(|source| SchemaError::Io { path: path.clone(), source })?;
            if metadata.is_dir() {
                walk(root, &path, out)?;
            } else if name.ends_with(".json") {
                let relative = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/")
                    .replace("__", "/");
                out.push((relative, path));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

/// Reads and parses every schema file, keyed by relative path.
fn collect_json(root: &Path, out: &mut BTreeMap<String, (Value, String)>) -> Result<(), SchemaError> {
    for (relative, path) in json_files(root)? {
        let text = read(&path)?;
        let value = serde_json::from_str(&text).map_err(|e| SchemaError::Json {
            path: path.clone(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        out.insert(relative, (value, text));
    }
    Ok(())
}

/// `v2/configmap/core.json` → (ConfigMap, core).
fn classify(root: &Path, relative: &str) -> Result<(ResourceKind, Component), SchemaError> {
    let layout_error = |message: String| SchemaError::Layout { path: root.join(relative), message };
    let parts: Vec<&str> = relative.split('/').collect();
    let [_, kind_dir, file] = parts.as_slice() else {
        return Err(layout_error("expected <version>/<kind>/<component>.json".into()));
    };
    let kind = ResourceKind::from_schema_dir(kind_dir).ok_or_else(|| {
        layout_error(format!("unknown kind directory {kind_dir:?} (use configmap, statefulset or deployment)"))
    })?;
    let stem = file.trim_end_matches(".json");
    let component = Component::parse(stem).ok_or_else(|| {
        let known: Vec<_> = Component::ALL.iter().map(|c| c.as_str()).collect();
        layout_error(format!("unknown component {stem:?} (known: {})", known.join(", ")))
    })?;
    if !component.allowed_on(kind) {
        return Err(layout_error(format!("component {component} never runs as a {kind}")));
    }
    Ok((kind, component))
}

/// Serves `$ref` targets from the files already read; refuses everything else.
struct LoadedFiles(Arc<HashMap<String, Value>>);

impl Retrieve for LoadedFiles {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        self.0.get(uri.as_str()).cloned().ok_or_else(|| {
            format!("{uri} is not one of the loaded schema files (only local files can be referenced)").into()
        })
    }
}

pub(super) fn options(base: String, documents: &Arc<HashMap<String, Value>>) -> jsonschema::ValidationOptions<'static> {
    let nested = {
        let documents = Arc::clone(documents);
        let base = base.clone();
        move |schema: &Value| -> Result<Validator, String> {
            options(base.clone(), &documents).build(schema).map_err(|e| e.to_string())
        }
    };
    let mut options = jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .with_base_uri(base)
        .with_retriever(LoadedFiles(Arc::clone(documents)))
        .with_keyword(DX_TYPE, move |parent, value, _| keywords::typed_string(parent, value, &nested));
    for name in DX_MODIFIERS {
        options = options.with_keyword(name, move |parent, _, _| keywords::modifier(parent, name));
    }
    options
}

fn compile(
    root: &Path,
    relative: &str,
    schema: &Value,
    documents: &Arc<HashMap<String, Value>>,
) -> Result<DocumentSchema, SchemaError> {
    let path = root.join(relative);
    let compile_error = |message: String| SchemaError::Compile { path: path.clone(), message };
    let validator =
        options(format!("{BASE}{relative}"), documents).build(schema).map_err(|e| compile_error(e.to_string()))?;
    let object = schema.as_object();
    let known_keys = object
        .and_then(|o| o.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let key_patterns = object
        .and_then(|o| o.get("patternProperties"))
        .and_then(Value::as_object)
        .map(|p| {
            p.keys()
                .map(|pattern| {
                    Regex::new(pattern).map_err(|e| compile_error(format!("patternProperties {pattern:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let unknown_keys = match object.and_then(|o| o.get(DX_UNKNOWN_KEYS)) {
        None => None,
        Some(Value::String(s)) if s == "allow" => None,
        Some(Value::String(s)) if s == "warn" => Some(Severity::Warn),
        Some(Value::String(s)) if s == "deny" => Some(Severity::Deny),
        Some(other) => {
            return Err(compile_error(format!("dxUnknownKeys must be \"deny\", \"warn\" or \"allow\", not {other}")));
        }
    };
    let renamed_keys = match object.and_then(|o| o.get(DX_RENAMED_KEYS)) {
        None => BTreeMap::new(),
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|_| compile_error("dxRenamedKeys must map old key names to new key names (strings)".into()))?,
    };
    let mut consumers = BTreeMap::new();
    for (key, property) in object.and_then(|o| o.get("properties")).and_then(Value::as_object).into_iter().flatten() {
        let Some(declared) = property.get(DX_CONSUMERS) else { continue };
        let names: Vec<String> = serde_json::from_value(declared.clone()).map_err(|_| {
            compile_error(format!("properties {key:?}: dxConsumers must be a list of DX component names"))
        })?;
        let components = names
            .iter()
            .map(|name| {
                Component::parse(name).filter(|c| c.workload_kind().is_some()).ok_or_else(|| {
                    compile_error(format!(
                        "properties {key:?}: dxConsumers names {name:?}, not a DX application \
                         (core, dam, persistence, ring-api, content-composer, image-processor)"
                    ))
                })
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        consumers.insert(key.clone(), components);
    }
    Ok(DocumentSchema {
        file: relative.to_owned(),
        validator,
        known_keys,
        key_patterns,
        unknown_keys,
        renamed_keys,
        consumers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::schema::SourceSchema;

    fn copy_flat(from: &Path, prefix: &str, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                copy_flat(&entry.path(), &format!("{name}__"), to);
            } else {
                std::fs::copy(entry.path(), to.join(name)).unwrap();
            }
        }
    }

    #[test]
    fn a_flat_directory_as_a_configmap_mounts_it_loads_the_same_set() {
        let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let flat = tempfile::tempdir().unwrap();
        copy_flat(&bundled, "", flat.path());
        assert!(flat.path().join("v2__configmap__core.json").exists());
        let from_flat = SchemaSet::load(flat.path()).unwrap();
        let from_tree = SchemaSet::load(&bundled).unwrap();
        assert_eq!(from_flat.file_count(), from_tree.file_count());
        assert_eq!(from_flat.version_names().collect::<Vec<_>>(), ["v1", "v2"]);
        let coverage = |set: &SchemaSet| set.version("v2").unwrap().coverage().count();
        assert_eq!(coverage(&from_flat), coverage(&from_tree));
    }

    #[test]
    fn dx_consumers_name_dx_applications() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.yaml"), "default: v1\nversions: [{name: v1}]\n").unwrap();
        std::fs::create_dir_all(dir.path().join("v1/configmap")).unwrap();
        let write = |consumers: &str| {
            let schema = format!(r#"{{"properties": {{"k": {{"type": "string", "dxConsumers": {consumers}}}}}}}"#);
            std::fs::write(dir.path().join("v1/configmap/global.json"), schema).unwrap();
        };
        write(r#"["dam", "image-processor"]"#);
        let set = SchemaSet::load(dir.path()).unwrap();
        let schema = set.version("v1").unwrap().schema(ResourceKind::ConfigMap, Component::Global).unwrap();
        assert_eq!(schema.keys_only_for_others(Component::Core), BTreeSet::from(["k".to_owned()]));
        assert!(schema.keys_only_for_others(Component::ImageProcessor).is_empty());
        for (consumers, expected) in [
            (r#"["global"]"#, r#"properties "k": dxConsumers names "global", not a DX application"#),
            (r#""dam""#, r#"properties "k": dxConsumers must be a list of DX component names"#),
        ] {
            write(consumers);
            let error = SchemaSet::load(dir.path()).err().unwrap().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn the_bundled_global_config_map_keeps_its_cdn_key_for_dam() {
        let set = SchemaSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap();
        let global =
            |version: Option<&str>| SourceSchema { component: Component::Global, version: version.map(Into::into) };
        assert_eq!(
            set.keys_only_for_others(&global(None), Component::Core),
            BTreeSet::from(["dam.cdn.url".to_owned()])
        );
        assert!(set.keys_only_for_others(&global(None), Component::Dam).is_empty(), "DAM uses every key");
        assert!(set.keys_only_for_others(&global(Some("v1")), Component::Core).is_empty(), "v1 declares no consumers");
        assert!(
            set.keys_only_for_others(&global(Some("v9")), Component::Core).is_empty(),
            "an unknown version narrows nothing"
        );
        let core = SourceSchema { component: Component::Core, version: None };
        assert!(set.keys_only_for_others(&core, Component::Dam).is_empty(), "core's ConfigMap declares none");
    }

    #[test]
    fn versions_keep_the_order_of_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let index = "default: v10\nversions: [{name: v9}, {name: v10}, {name: v2-beta}]\n";
        std::fs::write(dir.path().join("index.yaml"), index).unwrap();
        let set = SchemaSet::load(dir.path()).unwrap();
        assert_eq!(set.version_names().collect::<Vec<_>>(), ["v9", "v10", "v2-beta"]);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.yaml"), "default: v1\nversions: [{name: v1}]\n").unwrap();
        std::fs::create_dir_all(dir.path().join("v1/configmap")).unwrap();
        std::fs::write(dir.path().join("v1/configmap/core.json"), "{\n  \"type\": \"object\",\n  oops\n}").unwrap();
        let error = SchemaSet::load(dir.path()).err().unwrap().to_string();
        assert!(error.contains("v1/configmap/core.json:3:3: not valid JSON"), "{error}");
        std::fs::write(dir.path().join("v1/configmap/core.json"), r#"{"dxType": "colour"}"#).unwrap();
        let error = SchemaSet::load(dir.path()).err().unwrap().to_string();
        assert!(
            error.contains("v1/configmap/core.json: schema does not compile: unknown dxType \"colour\""),
            "{error}"
        );
        std::fs::write(dir.path().join("v1/configmap/core.json"), r#"{"dxMaximum": 3}"#).unwrap();
        let error = SchemaSet::load(dir.path()).err().unwrap().to_string();
        assert!(error.contains("dxMaximum needs a dxType beside it"), "{error}");
        std::fs::write(dir.path().join("v1/configmap/core.json"), r#"{"$ref": "../../common/missing.json"}"#).unwrap();
        let error = SchemaSet::load(dir.path()).err().unwrap().to_string();
        assert!(error.contains("schema does not compile"), "{error}");
        std::fs::remove_file(dir.path().join("v1/configmap/core.json")).unwrap();
        std::fs::create_dir_all(dir.path().join("v3/configmap")).unwrap();
        std::fs::write(dir.path().join("v3/configmap/core.json"), "{}").unwrap();
        let error = SchemaSet::load(dir.path()).err().unwrap().to_string();
        assert!(error.contains("v3/ is not a version listed in index.yaml"), "{error}");
    }
}
