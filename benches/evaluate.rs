//! Evaluation cost per review: decode, evaluate and respond for every example, measured side by
//! side in interleaved rounds, so the machine's noise hits every stage alike.
//!
//! Run: `cargo bench --bench evaluate`. Prints a table; the ratio column is evaluate ÷ decode,
//! decoding the body being the floor any webhook pays.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use dx_admission::admission::decode;
use dx_admission::admission::respond::{encode, respond};
use dx_admission::policy::schema::SchemaSet;
use dx_admission::policy::{Policy, Review, Settings, evaluate};
use serde::Deserialize;
use serde_json::{Value, json};

/// The allocator the server runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 15;
const PER_ROUND: usize = 200;

/// An UPDATE of `old` to `object`: evaluate also compares the two for the update categories.
fn update(object: &Value, old: &Value) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(&review(object)).unwrap();
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["oldObject"] = old.clone();
    serde_json::to_vec(&review).unwrap()
}

fn review(object: &Value) -> Vec<u8> {
    let text = std::fs::read_to_string("tests/fixtures/admission-reviews/configmap-create-allowed.json").unwrap();
    let mut review: Value = serde_json::from_str(&text).unwrap();
    let kind = object["kind"].as_str().unwrap();
    let group = if kind == "ConfigMap" { "" } else { "apps" };
    review["request"]["kind"] = json!({"group": group, "version": "v1", "kind": kind});
    review["request"]["object"] = object.clone();
    review["request"]["name"] = object["metadata"]["name"].clone();
    review["request"]["namespace"] = object["metadata"]["namespace"].clone();
    serde_json::to_vec(&review).unwrap()
}

fn examples() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for set in ["valid", "broken"] {
        let mut files: Vec<_> =
            std::fs::read_dir(Path::new("examples").join(set)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for document in serde_yaml_ng::Deserializer::from_str(&text) {
                let object = Value::deserialize(document).unwrap();
                let name = format!(
                    "{set}/{} {}",
                    object["kind"].as_str().unwrap(),
                    object["metadata"]["name"].as_str().unwrap()
                );
                out.push((name.clone(), review(&object)));
                // Workloads are also updated: unchanged (the whole semantic compare, nothing found)
                // and to a new image (category A).
                if set == "valid" && object["kind"] != "ConfigMap" && object["kind"] != "PersistentVolumeClaim" {
                    out.push((format!("{name} UPDATE same"), update(&object, &object)));
                    let mut image = object.clone();
                    image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("hcl/dx/next:95_CF230");
                    out.push((format!("{name} UPDATE image"), update(&image, &object)));
                }
            }
        }
    }
    out
}

/// Median of per-operation times over the rounds.
fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e6 / PER_ROUND as f64
}

fn main() {
    let schemas = SchemaSet::load(Path::new("schemas")).expect("schemas load");
    let settings = Settings::default();
    let policy = Policy::offline(&settings, &schemas);
    println!(
        "{:<52} {:>8} {:>10} {:>10} {:>8} {:>9}",
        "review (example object)", "bytes", "decode µs", "eval µs", "resp µs", "eval/dec"
    );
    let mut totals = (0.0, 0.0, 0.0);
    let examples = examples();
    for (name, body) in &examples {
        let (mut decode_t, mut eval_t, mut respond_t) = (Vec::new(), Vec::new(), Vec::new());
        let decoded = decode(body, 100).unwrap();
        let review = Review {
            operation: decoded.operation,
            namespace: decoded.namespace(),
            object: decoded.object.as_ref(),
            old_object: decoded.old_object.as_ref(),
        };
        let evaluation = evaluate(policy, review);
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for _ in 0..PER_ROUND {
                black_box(decode(black_box(body), 100).unwrap());
            }
            decode_t.push(start.elapsed());
            let start = Instant::now();
            for _ in 0..PER_ROUND {
                black_box(evaluate(policy, black_box(review)));
            }
            eval_t.push(start.elapsed());
            let start = Instant::now();
            for _ in 0..PER_ROUND {
                black_box(encode(&respond(&decoded, black_box(&evaluation))));
            }
            respond_t.push(start.elapsed());
        }
        let (d, e, r) = (median(decode_t), median(eval_t), median(respond_t));
        totals = (totals.0 + d, totals.1 + e, totals.2 + r);
        println!("{name:<52} {:>8} {d:>10.1} {e:>10.1} {r:>8.1} {:>9.2}", body.len(), e / d);
    }
    let n = examples.len() as f64;
    println!(
        "{:<52} {:>8} {:>10.1} {:>10.1} {:>8.1} {:>9.2}",
        "mean over examples",
        "",
        totals.0 / n,
        totals.1 / n,
        totals.2 / n,
        totals.1 / totals.0
    );
}
