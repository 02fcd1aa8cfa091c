//! Any text as a schema file in an otherwise valid set: loading refuses it or compiles it, and
//! never panics.
#![no_main]

use std::sync::LazyLock;

use dx_admission::policy::schema::SchemaSet;
use libfuzzer_sys::fuzz_target;

static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("index.yaml"), "default: v1\nversions: [{name: v1}]\n").unwrap();
    std::fs::create_dir_all(dir.path().join("v1/configmap")).unwrap();
    std::fs::create_dir_all(dir.path().join("common")).unwrap();
    std::fs::write(dir.path().join("common/definitions.json"), r#"{"$defs": {"s": {"type": "string"}}}"#).unwrap();
    dir
});

fuzz_target!(|text: &[u8]| {
    let path = DIR.path().join("v1/configmap/core.json");
    std::fs::write(&path, text).unwrap();
    let _ = SchemaSet::load(DIR.path());
});
