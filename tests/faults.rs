//! Faults under load: a load generator keeps reviewing (new TLS handshakes every few requests)
//! while the serving certificate rotates, a broken pair arrives, and a broken schema is
//! reloaded. The design promises that no review fails in any of these; these tests count.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::load::{self, Pace, Request, Target};
use common::{Pki, TestServer, eventually, examples, review, serial_of_pem};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

/// A DX StatefulSet allowed, the same one denied, and the mutate path: what the API server sends
/// while someone applies DX.
fn mix() -> Arc<[Request]> {
    let core = examples("valid").into_iter().find(|(file, _)| file == "core.yaml").unwrap().1;
    let mut unpinned = core.clone();
    unpinned["spec"]["template"]["spec"]["containers"][0]["image"] = json!("hcl/dx/core:latest");
    Arc::from(vec![
        Request::review("/validate", &review("CREATE", Some(&core), None), true),
        Request::review("/validate", &review("CREATE", Some(&unpinned), None), false),
        Request::review("/mutate", &review("CREATE", Some(&core), None), true),
    ])
}

/// Runs the mix at 200 reviews/s over 4 connections that reconnect every 10 reviews.
fn start_load(server: &TestServer, seconds: u64) -> tokio::task::JoinHandle<load::Outcome> {
    let target = Target::new(server.tls_addr, &server.pki.ca_pem);
    tokio::spawn(async move {
        load::run_reconnecting(&target, mix(), 4, Pace::Rate(200.0), Duration::from_secs(seconds), 10).await
    })
}

/// Waits until the server has answered 50 reviews of the load, so the fault lands under load.
async fn under_load(server: &TestServer) {
    let ops = server.ops_addr;
    let running = eventually(WAIT, || async { common::metric_sum(ops, "dx_admission_reviews_total").await >= 50.0 });
    assert!(running.await, "the load runs");
}

fn assert_no_failures(outcome: &load::Outcome, fault: &str) {
    assert_eq!(outcome.failed, 0, "{fault}: {} reviews failed, e.g. {:?}", outcome.failed, outcome.failures);
    assert!(outcome.ok > 300, "{fault}: only {} reviews answered", outcome.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_and_a_broken_pair_under_load_fail_no_review() {
    let mut server = TestServer::start().await;
    let client = server.client();
    let load = start_load(&server, 4);

    under_load(&server).await;
    let (cert, key) = server.pki.issue();
    let rotated = serial_of_pem(&cert);
    server.mount.swap(&cert, &key);
    assert!(eventually(WAIT, || async { client.serial().await == rotated }).await, "rotation is served");

    // A pair whose key belongs to another certificate: refused, the rotated pair keeps serving.
    let (_, foreign_key) = Pki::new("another CA").issue();
    server.mount.swap(&cert, &foreign_key);
    let refused =
        eventually(WAIT, || async { server.metric("dx_admission_tls_reloads_total{result=\"failed\"}").await >= 1.0 })
            .await;
    assert!(refused, "the broken pair is refused");
    assert_eq!(client.serial().await, rotated);

    // Rotated again, to a good pair, while the load still runs.
    let (cert, key) = server.pki.issue();
    let again = serial_of_pem(&cert);
    server.mount.swap(&cert, &key);
    assert!(eventually(WAIT, || async { client.serial().await == again }).await, "second rotation is served");

    let outcome = load.await.unwrap();
    assert_no_failures(&outcome, "certificate rotation and a broken pair");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_schema_reloaded_under_load_fails_no_review_and_keeps_the_last_good_set() {
    let schemas = tempfile::tempdir().unwrap();
    common::copy_schemas(schemas.path());
    let dir = schemas.path().to_owned();
    let server = TestServer::start_with(|config| config.schemas = dir.clone()).await;
    let load = start_load(&server, 4);

    under_load(&server).await;
    let schema = schemas.path().join("v2/configmap/core.json");
    let good = std::fs::read_to_string(&schema).unwrap();
    std::fs::write(&schema, "{\n  \"type\": \"object\",\n  oops\n}").unwrap();
    let refused = eventually(WAIT, || async {
        server.metric("dx_admission_schema_reloads_total{result=\"failed\"}").await >= 1.0
    })
    .await;
    assert!(refused, "the broken schema set is refused");

    // The last good set still judges ConfigMaps: a typo is still denied, by the v2 schema.
    let mut config = examples("valid").into_iter().find(|(_, o)| o["metadata"]["name"] == "dx-core-config").unwrap().1;
    config["data"]["jvm.heap.max"] = Value::String("4 gigabytes".into());
    let answer = server.validate(&review("CREATE", Some(&config), None)).await;
    assert_eq!(answer["allowed"], false);
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(message.contains("rejected under DX schema v2"), "{message}");

    // Repaired with a change (the same text again would be no change, and nothing to count).
    std::fs::write(&schema, format!("{good}\n")).unwrap();
    let reloaded =
        eventually(WAIT, || async { server.metric("dx_admission_schema_reloads_total{result=\"ok\"}").await >= 1.0 })
            .await;
    assert!(reloaded, "the repaired set is loaded");

    let outcome = load.await.unwrap();
    assert_no_failures(&outcome, "a broken schema reload");
}
