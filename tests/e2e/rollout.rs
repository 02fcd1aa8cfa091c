//! Config checksums end to end: the webhook stamps workloads, the controller re-stamps them when
//! a ConfigMap or Secret changes in the cluster, the delete guard, and leadership.

use std::time::{Duration, Instant};

use dx_admission::checksum::annotations::{AGGREGATE, source_value};
use dx_admission::checksum::{Keys, SourceDigest, SourceKind};
use serde_json::Value;

use crate::common::{TestServer, eventually, repo};
use crate::{Env, cluster_mode};

const NS: &str = "e2e-roll";

/// One annotation of a workload's pod template ("" when absent).
pub fn template_annotation(env: &Env, namespace: &str, kind: &str, name: &str, key: &str) -> String {
    let (ok, out, err) = env.kubectl(&["get", kind, name, "-n", namespace, "-o", "json"]);
    assert!(ok, "{err}");
    let object: Value = serde_json::from_str(&out).unwrap();
    object["spec"]["template"]["metadata"]["annotations"][key].as_str().unwrap_or("").to_owned()
}

pub fn generation(env: &Env, namespace: &str, kind: &str, name: &str) -> u64 {
    let (ok, out, err) = env.kubectl(&["get", kind, name, "-n", namespace, "-o", "jsonpath={.metadata.generation}"]);
    assert!(ok, "{err}");
    out.parse().unwrap()
}

fn lease_holder(env: &Env) -> String {
    let (_, out, _) = env.kubectl(&[
        "get",
        "lease",
        "dx-admission-rollout",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    out
}

fn app_checksum(env: &Env) -> String {
    template_annotation(env, NS, "deployment", "dx-ring-api", "checksum.dx.hcl.com/configmap.app-config")
}

/// Changes app-config's `log.level` in the cluster, as `kubectl edit` would, and waits (up to
/// 15 s) for the Deployment to carry the matching checksum.
async fn set_log_level_and_wait(env: &Env, level: &str) -> bool {
    let patch = format!(r#"{{"data":{{"log.level":"{level}"}}}}"#);
    let (ok, _, err) = env.kubectl(&["patch", "configmap", "app-config", "-n", NS, "--type=merge", "-p", &patch]);
    assert!(ok, "{err}");
    let expected = expected_config_checksum(&[("log.level", level)]);
    eventually(Duration::from_secs(15), || async { app_checksum(env) == expected }).await
}

/// The per-source annotation value a ConfigMap's data gives when the pod uses all its keys.
fn expected_config_checksum(data: &[(&str, &str)]) -> String {
    let data: serde_json::Map<String, Value> =
        data.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect();
    let map: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}, "data": data})).unwrap();
    source_value(SourceKind::ConfigMap, &SourceDigest::of_config_map(&map).checksum(&Keys::All))
}

/// A DX Deployment reading a ConfigMap (envFrom), an optional one, and a Secret key; plus an
/// unrelated ConfigMap.
fn manifests(app_config: &str) -> String {
    let deployment = std::fs::read_to_string(repo().join("examples/valid/ring-api.yaml"))
        .unwrap()
        .replace("namespace: dx", &format!("namespace: {NS}"))
        .replace("name: dx-ring-api-config", "name: app-config")
        .replace("name: dx-global-config", "name: other-config\n            optional: true")
        .replace(
            "        envFrom:\n",
            "        env:\n        - name: DB_PASSWORD\n          valueFrom:\n            secretKeyRef:\n              name: db\n              key: password\n        envFrom:\n",
        );
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app-config, namespace: {NS}}}\ndata: {app_config}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: other-config, namespace: {NS}}}\ndata: {{a: '1'}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: unrelated, namespace: {NS}}}\ndata: {{a: '1'}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: db, namespace: {NS}}}\nstringData: {{password: hunter2}}\n---\n{deployment}"
    )
}

pub async fn workloads_are_stamped_with_config_checksums(env: &mut Env) {
    let (ok, _, err) = env.kubectl(&["create", "namespace", NS]);
    assert!(ok, "{err}");
    let (ok, out, err) = env.kubectl_stdin(&["apply", "-f", "-"], &manifests("{log.level: info}"));
    assert!(ok, "{out}{err}");
    assert_eq!(app_checksum(env), expected_config_checksum(&[("log.level", "info")]));
    let secret = template_annotation(env, NS, "deployment", "dx-ring-api", "checksum.dx.hcl.com/secret.db");
    assert!(secret.starts_with("hmac-sha256:") && secret.len() == "hmac-sha256:".len() + 64, "{secret}");
    let (_, object, _) = env.kubectl(&["get", "deployment", "dx-ring-api", "-n", NS, "-o", "json"]);
    assert!(!object.contains("hunter2"), "no Secret value reaches the workload");
    let optional =
        template_annotation(env, NS, "deployment", "dx-ring-api", "checksum.dx.hcl.com/configmap.other-config");
    assert!(optional.starts_with("sha256:"), "an optional source that exists is stamped too: {optional}");
    assert!(template_annotation(env, NS, "deployment", "dx-ring-api", AGGREGATE).starts_with("sha256:"));
    // Applying the same manifests again changes nothing: the webhook's patch is idempotent.
    let before = generation(env, NS, "deployment", "dx-ring-api");
    let (ok, out, err) = env.kubectl_stdin(&["apply", "-f", "-"], &manifests("{log.level: info}"));
    assert!(ok, "{err}");
    assert!(out.contains("deployment.apps/dx-ring-api unchanged"), "{out}");
    assert_eq!(generation(env, NS, "deployment", "dx-ring-api"), before);
}

pub async fn a_config_change_in_the_cluster_rolls_the_workload(env: &mut Env) {
    let aggregate = template_annotation(env, NS, "deployment", "dx-ring-api", AGGREGATE);
    let before = generation(env, NS, "deployment", "dx-ring-api");
    // An unrelated ConfigMap changes: nothing happens.
    let (ok, _, err) =
        env.kubectl(&["patch", "configmap", "unrelated", "-n", NS, "--type=merge", "-p", r#"{"data":{"a":"2"}}"#]);
    assert!(ok, "{err}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(generation(env, NS, "deployment", "dx-ring-api"), before, "no rollout for an unrelated change");
    // The referenced one changes, as `kubectl edit` would: the template is re-stamped.
    let started = Instant::now();
    assert!(set_log_level_and_wait(env, "debug").await, "the controller re-stamps the Deployment");
    println!("e2e: ConfigMap change -> Deployment re-stamped in {:.1}s", started.elapsed().as_secs_f64());
    assert_ne!(template_annotation(env, NS, "deployment", "dx-ring-api", AGGREGATE), aggregate);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(generation(env, NS, "deployment", "dx-ring-api"), before + 1, "one rollout for one change");
    // A Secret change rolls it too.
    let secret = template_annotation(env, NS, "deployment", "dx-ring-api", "checksum.dx.hcl.com/secret.db");
    let (ok, _, err) = env.kubectl(&[
        "patch",
        "secret",
        "db",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"stringData":{"password":"correct horse"}}"#,
    ]);
    assert!(ok, "{err}");
    let changed = eventually(Duration::from_secs(15), || async {
        template_annotation(env, NS, "deployment", "dx-ring-api", "checksum.dx.hcl.com/secret.db") != secret
    })
    .await;
    assert!(changed, "a Secret change re-stamps the Deployment");
}

pub async fn deleting_a_config_in_use_is_refused(env: &mut Env) {
    let (ok, _, err) = env.kubectl(&["delete", "configmap", "app-config", "-n", NS]);
    assert!(!ok);
    assert_eq!(
        err,
        "Error from server (Forbidden): admission webhook \"guard.dx-admission.hcl.com\" denied the request: \
         ConfigMap e2e-roll/app-config rejected: it is still in use (1 problem):\n\
         - ConfigMap e2e-roll/app-config: still used by Deployment e2e-roll/dx-ring-api [config-in-use] \
         fix: remove the reference from those workloads (or mark it optional: true) and apply them, then delete\n"
    );
    let counted = env.webhook().metric("dx_admission_findings_total{rule=\"config-in-use\",severity=\"deny\"}").await;
    assert_eq!(counted, 1.0, "the guard's finding is counted");
    let (ok, _, err) = env.kubectl(&["delete", "secret", "db", "-n", NS]);
    assert!(!ok);
    assert!(
        err.contains("- Secret e2e-roll/db: still used by Deployment e2e-roll/dx-ring-api [config-in-use]"),
        "{err}"
    );
    // An optional reference does not hold a source, and unreferenced ones delete freely.
    for name in ["other-config", "unrelated"] {
        let (ok, _, err) = env.kubectl(&["delete", "configmap", name, "-n", NS]);
        assert!(ok, "{name}: {err}");
    }
    // The pods lose what the optional source gave them, so its deletion rolls them too.
    let dropped = eventually(Duration::from_secs(15), || async {
        template_annotation(env, NS, "deployment", "dx-ring-api", "checksum.dx.hcl.com/configmap.other-config")
            .is_empty()
    })
    .await;
    assert!(dropped, "the deleted optional source's annotation is removed");
}

pub async fn leadership_moves_and_a_restarted_controller_patches_nothing(env: &mut Env) {
    assert_eq!(lease_holder(env), "replica-a");
    let before = generation(env, NS, "deployment", "dx-ring-api");
    // A second replica starts: it follows, and starting patches nothing.
    let kubeconfig = env.cluster.kubeconfig.clone();
    let replica_b =
        TestServer::start_with(move |config| config.cluster = Some(cluster_mode(&kubeconfig, "replica-b"))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lease_holder(env), "replica-a");
    // Replica A stops cleanly; the webhook configurations now point at B, which takes the Lease.
    let ca = replica_b.pki.ca_pem.clone();
    let replica_a = env.webhook.replace(replica_b).expect("replica a");
    env.register(&ca);
    if let Some(server) = replica_a.server {
        server.shutdown().await;
    }
    let moved = eventually(Duration::from_secs(10), || async { lease_holder(env) == "replica-b" }).await;
    assert!(moved, "leadership moves to replica-b once replica-a releases it");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(generation(env, NS, "deployment", "dx-ring-api"), before, "a new leader patches nothing");
    // The new leader rolls on the next change.
    assert!(set_log_level_and_wait(env, "warn").await, "replica-b's controller re-stamps");
}
