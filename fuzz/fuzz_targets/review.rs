//! Any request body: decode, evaluate under the bundled schemas, respond. Never panics.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use dx_admission::admission::decode;
use dx_admission::admission::respond::{encode, respond};
use dx_admission::policy::schema::SchemaSet;
use dx_admission::policy::{Policy, Review, Settings, evaluate};
use libfuzzer_sys::fuzz_target;

static SCHEMAS: LazyLock<SchemaSet> = LazyLock::new(|| {
    SchemaSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")).expect("bundled schemas")
});
static SETTINGS: LazyLock<Settings> = LazyLock::new(Settings::default);

fuzz_target!(|body: &[u8]| {
    let Ok(decoded) = decode(body, 100) else { return };
    let review = Review {
        operation: decoded.operation,
        namespace: decoded.namespace(),
        object: decoded.object.as_ref(),
        old_object: decoded.old_object.as_ref(),
    };
    let evaluation = evaluate(Policy::offline(&SETTINGS, &SCHEMAS), review);
    let response = respond(&decoded, &evaluation);
    assert_eq!(response.allowed, !evaluation.denied());
    let body: serde_json::Value = serde_json::from_slice(&encode(&response)).expect("the answer is JSON");
    assert_eq!(body["response"]["uid"], response.uid.as_str());
});
