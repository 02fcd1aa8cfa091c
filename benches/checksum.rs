//! Config checksums: the mutating path's work next to the validating path's on the same
//! workloads (interleaved rounds), and the digest cache's memory per 10,000 ConfigMaps.
//!
//! Run: `cargo bench --bench checksum`.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use dx_admission::checksum::patch::{Lookup, patch, stamp_references};
use dx_admission::checksum::{SourceDigest, SourceKind, SourceRef, references};
use dx_admission::cluster::SourceKey;
use dx_admission::policy::schema::SchemaSet;
use dx_admission::policy::{Object, Operation, Policy, ResourceKind, Review, Settings, evaluate};
use k8s_openapi::api::core::v1::ConfigMap;
use serde::Deserialize;
use serde_json::{Value, json};

const ROUNDS: usize = 15;
const PER_ROUND: usize = 500;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

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
    let policy = Policy { settings: &settings, schemas: &schemas };
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
                let stamp = stamp_references(&found, "dx", |s| digests.get(s).map_or(Lookup::Missing, Lookup::Found));
                black_box(patch(object.pod_template_metadata(), &stamp.annotations));
            }
            mutate.push(start.elapsed());
        }
        let (v, m) = (median(validate), median(mutate));
        println!("{file:<36} {v:>10.2} {m:>10.2} {:>12.2}", m / v);
    }

    // The cache keeps a digest per key, never the data: 10,000 ConfigMaps of 8 keys × 200 bytes.
    let count = 10_000;
    let before = rss_kib();
    let mut cache: HashMap<SourceKey, SourceDigest> = HashMap::new();
    let mut data_bytes = 0usize;
    for i in 0..count {
        let map = config_map(&format!("dx-app-{i:05}-config"), 8, 200);
        data_bytes += map.data.as_ref().unwrap().iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        let key = SourceKey {
            namespace: "dx".into(),
            source: SourceRef { kind: SourceKind::ConfigMap, name: map.metadata.name.clone().unwrap() },
        };
        cache.insert(key, SourceDigest::of_config_map(&map));
    }
    let after = rss_kib();
    let counted: usize =
        cache.iter().map(|(k, d)| k.namespace.capacity() + k.source.name.capacity() + d.heap_bytes()).sum();
    println!(
        "cache of {count} ConfigMaps (8 keys x 200 B, {:.1} MiB of data): RSS +{:.1} MiB, counted heap {:.1} MiB, {:.0} B per ConfigMap",
        data_bytes as f64 / 1048576.0,
        (after.saturating_sub(before)) as f64 / 1024.0,
        counted as f64 / 1048576.0,
        (after.saturating_sub(before)) as f64 * 1024.0 / count as f64
    );
    black_box(cache);
}
