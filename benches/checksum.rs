//! Config checksums: the mutating path's work next to the validating path's on the same
//! workloads (interleaved rounds). The digest cache's memory is measured for real, against an
//! API server, by `benches/load.rs`.
//!
//! Run: `cargo bench --bench checksum`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use dx_admission::checksum::patch::{patch, stamp_references};
use dx_admission::checksum::{SourceDigest, SourceRef, references};
use dx_admission::lookup::Lookup;
use dx_admission::policy::schema::SchemaSet;
use dx_admission::policy::{Object, Operation, PodTemplate, Policy, ResourceKind, Review, Settings, evaluate};
use k8s_openapi::api::core::v1::ConfigMap;
use serde::Deserialize;
use serde_json::{Value, json};

/// The allocator the server runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 15;
const PER_ROUND: usize = 500;

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e6 / PER_ROUND as f64
}

fn config_map(name: &str, keys: usize, value_bytes: usize) -> ConfigMap {
    let data: serde_json::Map<String, Value> = (0..keys)
        .map(|k| (format!("key.{k}"), Value::String(format!("{name}-{k}-{}", "v".repeat(value_bytes)))))
        .collect();
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "dx"}, "data": data})).unwrap()
}

fn main() {
    let schemas = SchemaSet::load(Path::new("schemas")).expect("schemas");
    let settings = Settings::default();
    let policy = Policy::offline(&settings, &schemas);
    println!("{:<36} {:>10} {:>10} {:>12}", "workload (examples/valid)", "validate µs", "mutate µs", "mutate/valid");
    for file in
        ["core.yaml", "dam.yaml", "persistence.yaml", "ring-api.yaml", "content-composer.yaml", "image-processor.yaml"]
    {
        let text = std::fs::read_to_string(Path::new("examples/valid").join(file)).unwrap();
        let value = Value::deserialize(serde_yaml_ng::Deserializer::from_str(&text).next().unwrap()).unwrap();
        let kind = if value["kind"] == "StatefulSet" { ResourceKind::StatefulSet } else { ResourceKind::Deployment };
        let object = Object::from_json(kind, value).unwrap();
        let digests: BTreeMap<SourceRef, SourceDigest> = references(object.pod_spec().unwrap())
            .keys()
            .map(|source| (source.clone(), SourceDigest::of_config_map(&config_map(&source.name, 6, 40))))
            .collect();
        let review = Review { operation: Operation::Create, namespace: "dx", object: Some(&object), old_object: None };
        let (mut validate, mut mutate) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for _ in 0..PER_ROUND {
                black_box(evaluate(policy, black_box(review)));
            }
            validate.push(start.elapsed());
            let start = Instant::now();
            for _ in 0..PER_ROUND {
                // What /mutate does on a cache hit: discover references, stamp, diff into a patch.
                let spec = black_box(&object).pod_spec().unwrap();
                let found = references(spec);
                let stamp = stamp_references(&found, "dx", None, dx_admission::checksum::Narrowing::Apply, |s| {
                    digests.get(s).map_or(Lookup::Absent, Lookup::Found)
                });
                black_box(patch(object.template_metadata(), &stamp.annotations));
            }
            mutate.push(start.elapsed());
        }
        let (v, m) = (median(validate), median(mutate));
        println!("{file:<36} {v:>10.2} {m:>10.2} {:>12.2}", m / v);
    }
}
