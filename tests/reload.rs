//! Hot reload of certificates and schemas: changes are picked up without a restart; a broken
//! change is refused and the last good one keeps serving.

mod common;

use std::time::Duration;

use common::{Pki, TestServer, eventually, review, serial_of, serial_of_pem};
use http_body_util::Full;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_rotated_pair_serves_new_handshakes_and_open_connections_survive() {
    let mut server = TestServer::start().await;
    let client = server.client();
    let first = client.serial().await;

    // A connection opened before the rotation.
    let stream = client.connect().await.unwrap();
    assert_eq!(serial_of(&stream), first);
    let mut sender = common::http1::<_, Full<bytes::Bytes>>(stream).await;

    let (cert, key) = server.pki.issue();
    let rotated = serial_of_pem(&cert);
    assert_ne!(rotated, first);
    server.mount.swap(&cert, &key);
    assert!(
        eventually(WAIT, || async { client.serial().await == rotated }).await,
        "new handshakes see the rotated serial"
    );
    // The counter moves just after the swap: wait for it rather than race it.
    let counted =
        eventually(WAIT, || async { server.metric("dx_admission_tls_reloads_total{result=\"ok\"}").await == 1.0 })
            .await;
    assert!(counted, "one successful reload is counted");

    // The old connection still answers.
    let body = common::fixture("deployment-create.json").to_string();
    let (status, answer) = common::send(&mut sender, "/validate", "application/json", body.into()).await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], true);
}

#[tokio::test]
async fn a_broken_pair_is_refused_and_the_last_good_one_keeps_serving() {
    let mut server = TestServer::start().await;
    let client = server.client();
    let serving = client.serial().await;
    let other = Pki::new("another CA");
    let (cert, _) = server.pki.issue();
    let (_, foreign_key) = other.issue();

    // A pair that matches and chains to the CA, but expired yesterday.
    let expired_key = rcgen::KeyPair::generate().unwrap();
    let mut expired = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
    let now = std::time::SystemTime::now();
    expired.not_before = (now - std::time::Duration::from_secs(7 * 86_400)).into();
    expired.not_after = (now - std::time::Duration::from_secs(86_400)).into();
    let expired_cert = server.pki.sign(&expired, &expired_key);
    for (name, cert, key) in [
        ("expired pair", expired_cert, expired_key.serialize_pem()),
        ("key of another certificate", cert.clone(), foreign_key),
        (
            "garbage certificate",
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_owned(),
            String::new(),
        ),
        ("empty files", String::new(), String::new()),
    ] {
        let failed_before = server.metric("dx_admission_tls_reloads_total{result=\"failed\"}").await;
        server.mount.swap(&cert, &key);
        let refused = eventually(WAIT, || async {
            server.metric("dx_admission_tls_reloads_total{result=\"failed\"}").await > failed_before
        })
        .await;
        assert!(refused, "{name}: the reload is refused and counted");
        assert_eq!(client.serial().await, serving, "{name}: the last good pair keeps serving");
        let answer = server.validate(&common::fixture("deployment-create.json")).await;
        assert_eq!(answer["allowed"], true, "{name}");
    }
    assert_eq!(server.metric("dx_admission_tls_reloads_total{result=\"ok\"}").await, 0.0);

    // A good pair afterwards is taken.
    let (cert, key) = server.pki.issue();
    server.mount.swap(&cert, &key);
    let rotated = serial_of_pem(&cert);
    assert!(eventually(WAIT, || async { client.serial().await == rotated }).await);
}

#[tokio::test]
async fn the_periodic_re_read_catches_changes_the_watch_missed() {
    // Writing through the symlinked file in place does not swap ..data; the periodic
    // re-read must still pick it up.
    let server = TestServer::start_with(|config| config.limits.reload_interval = Duration::from_millis(300)).await;
    let client = server.client();
    let (cert, key) = server.pki.issue();
    let target = std::fs::read_link(server.mount.dir.join("..data")).unwrap();
    let generation = server.mount.dir.join(target);
    std::fs::write(generation.join("tls.key"), &key).unwrap();
    std::fs::write(generation.join("tls.crt"), &cert).unwrap();
    let rotated = serial_of_pem(&cert);
    assert!(eventually(WAIT, || async { client.serial().await == rotated }).await);
}

fn config_with_cache_entries(entries: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dx-core-config", "namespace": "dx",
                     "labels": {"app.kubernetes.io/part-of": "dx", "app.kubernetes.io/component": "core"}},
        "data": {"log.level": "info", "jvm.heap.max": "4Gi", "cache.entries": entries}
    })
}

#[tokio::test]
async fn schema_changes_are_picked_up_and_a_broken_set_is_refused_whole() {
    let temp = tempfile::tempdir().unwrap();
    let schemas = temp.path().join("schemas");
    common::copy_schemas(&schemas);
    let dir = schemas.clone();
    let server = TestServer::start_with(move |config| config.schemas = dir).await;
    let review = review("CREATE", Some(&config_with_cache_entries("5000")), None);
    assert_eq!(server.validate(&review).await["allowed"], true);

    // Tighten the bound: the next review is judged by the new schema.
    let core = schemas.join("v2/configmap/core.json");
    let text = std::fs::read_to_string(&core).unwrap();
    std::fs::write(&core, text.replace("\"dxMaximum\": 1000000", "\"dxMaximum\": 2000")).unwrap();
    let denied = eventually(WAIT, || async { server.validate(&review).await["allowed"] == false }).await;
    assert!(denied, "the tightened schema is in force");
    // The counter moves just after the swap: wait for it rather than race it.
    let counted =
        eventually(WAIT, || async { server.metric("dx_admission_schema_reloads_total{result=\"ok\"}").await == 1.0 })
            .await;
    assert!(counted, "one successful reload is counted");

    // Break one file: the whole set is refused and the last good one (max 2000) keeps serving.
    std::fs::write(schemas.join("v1/configmap/dam.json"), "{ not json").unwrap();
    let refused = eventually(WAIT, || async {
        server.metric("dx_admission_schema_reloads_total{result=\"failed\"}").await >= 1.0
    })
    .await;
    assert!(refused, "the broken set is refused and counted");
    let answer = server.validate(&review).await;
    assert_eq!(answer["allowed"], false);
    assert!(answer["status"]["message"].as_str().unwrap().contains("\"5000\" is above the maximum 2000"), "{answer}");
    assert_eq!(server.ops("/readyz").await.0, 200, "a refused reload does not make the server unready");
}

/// The bundled schemas as a ConfigMap holds them: flat keys, `/` written as `__`.
/// Schemas mounted from a ConfigMap (the chart's `schemas.configMap`): flat `__` names, and an
/// update arrives as the kubelet's `..data` swap. The swap is picked up; a swap to a broken set is
/// refused and the last good set keeps judging.
#[tokio::test]
async fn schemas_mounted_from_a_configmap_reload_on_the_data_swap() {
    let temp = tempfile::tempdir().unwrap();
    let files = common::flat_schemas(&common::repo().join("schemas"));
    assert!(files.iter().any(|(name, _)| name == "v2__configmap__core.json"), "flat names");
    let mut mount = common::SecretMount::of_files(temp.path(), &common::borrowed(&files));
    let dir = temp.path().to_owned();
    let server = TestServer::start_with(move |config| config.schemas = dir).await;
    let review = review("CREATE", Some(&config_with_cache_entries("5000")), None);
    assert_eq!(server.validate(&review).await["allowed"], true);

    let mut tightened = files.clone();
    for (name, content) in &mut tightened {
        if name == "v2__configmap__core.json" {
            let text = String::from_utf8(content.clone()).unwrap();
            assert!(text.contains("\"dxMaximum\": 1000000"));
            *content = text.replace("\"dxMaximum\": 1000000", "\"dxMaximum\": 2000").into_bytes();
        }
    }
    mount.swap_files(&common::borrowed(&tightened));
    let denied = eventually(WAIT, || async { server.validate(&review).await["allowed"] == false }).await;
    assert!(denied, "the swapped-in schemas are in force");

    let mut broken = tightened.clone();
    for (name, content) in &mut broken {
        if name == "v1__configmap__dam.json" {
            *content = b"{ not json".to_vec();
        }
    }
    mount.swap_files(&common::borrowed(&broken));
    let refused = eventually(WAIT, || async {
        server.metric("dx_admission_schema_reloads_total{result=\"failed\"}").await >= 1.0
    })
    .await;
    assert!(refused, "the broken set is refused");
    assert_eq!(server.validate(&review).await["allowed"], false, "the last good set keeps judging");
}
