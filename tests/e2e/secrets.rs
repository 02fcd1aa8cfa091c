//! No Secret value anywhere: marker values planted in a Secret that a DX workload uses, changed,
//! and refused deletion, must appear in no log line of the real binary (JSON and text), no
//! metric, no annotation or object, no denial message and no `check` output — in plain, base64
//! or hex form.

use std::time::Duration;

use base64::Engine;

use crate::Env;
use crate::common::binary::{BIN, Running, serve};
use crate::common::{eventually, http_get, repo};

const NS: &str = "e2e-secrets";
const FIRST: &str = "marker-first-4b1d9a7e-secret";
const SECOND: &str = "marker-second-c3e8f051-secret";

/// Every form a value could leak in: as is, base64 (as in the object), hex either case.
fn forms(value: &str) -> Vec<String> {
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    vec![
        value.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(value),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(value),
        hex.to_uppercase(),
        hex,
    ]
}

fn assert_no_marker(what: &str, text: &str) {
    for marker in [FIRST, SECOND] {
        for form in forms(marker) {
            assert!(!text.contains(&form), "{what} holds the Secret value {marker:?} as {form:?}:\n{text}");
        }
    }
}

/// A replica in cluster mode, logging at debug level in `format`.
fn replica(dir: &std::path::Path, format: &str, env: &Env) -> Running {
    let kubeconfig = env.cluster.kubeconfig.to_str().unwrap().to_owned();
    let schemas = repo().join("schemas");
    let identity = format!("secrets-{format}");
    let args = [
        "--log-format",
        format,
        "--log",
        "debug",
        "--tls-cert",
        "tls.crt",
        "--tls-key",
        "tls.key",
        "--schemas",
        schemas.to_str().unwrap(),
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        NS,
        "--checksum-key-file",
        "checksum.key",
        "--identity",
        &identity,
        "--rollout-debounce",
        "200ms",
        "--drain-delay",
        "0s",
    ];
    serve(dir, &args)
}

fn webhooks(name: &str, addr: std::net::SocketAddr, ca: &str) -> String {
    let rule = |operations: &str, resources: &str, path: &str, kind: &str| {
        format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\n\
             webhooks:\n  - name: {name}.e2e.dx-admission.hcl.com\n    admissionReviewVersions: [v1]\n    sideEffects: None\n    failurePolicy: Fail\n\
             \x20   clientConfig:\n      url: https://{addr}{path}\n      caBundle: {ca}\n\
             \x20   rules:\n      - apiGroups: [\"\", apps]\n        apiVersions: [v1]\n        operations: [{operations}]\n        resources: [{resources}]\n\
             \x20   namespaceSelector:\n      matchLabels:\n        kubernetes.io/metadata.name: {NS}\n"
        )
    };
    format!(
        "{}---\n{}",
        rule(
            "CREATE, UPDATE, DELETE",
            "configmaps, secrets, deployments, statefulsets",
            "/validate",
            "ValidatingWebhookConfiguration"
        ),
        rule("CREATE, UPDATE", "deployments, statefulsets", "/mutate", "MutatingWebhookConfiguration")
    )
}

fn secret(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: dx-marker-credentials\n  namespace: {NS}\n  labels: {{app.kubernetes.io/part-of: dx}}\n\
         stringData:\n  password: {value}\n"
    )
}

pub async fn no_secret_value_reaches_logs_metrics_annotations_or_messages(env: &mut Env) {
    let (dir, pki) = env.namespace_with_serving_pair(NS);
    // The key every replica of this suite shares: replicas with different keys would re-stamp
    // each other's checksums for ever.
    std::fs::write(dir.join("checksum.key"), crate::CHECKSUM_KEY).unwrap();
    let json = replica(&dir, "json", env);
    let text = replica(&dir, "text", env);
    let ca = base64::engine::general_purpose::STANDARD.encode(&pki.ca_pem);
    // Both replicas review every request of the namespace: one logs JSON, the other text.
    let config =
        format!("{}---\n{}", webhooks("e2e-secrets-json", json.tls, &ca), webhooks("e2e-secrets-text", text.tls, &ca));
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &config);
    assert!(ok, "{err}");

    // A DX workload that uses the Secret, stamped with its checksum.
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &secret(FIRST));
    assert!(ok, "{err}");
    let workload = std::fs::read_to_string(repo().join("examples/valid/ring-api.yaml"))
        .unwrap()
        .replace("namespace: dx", &format!("namespace: {NS}"))
        .replace(
            "            name: dx-global-config\n",
            "            name: dx-global-config\n        - secretRef:\n            name: dx-marker-credentials\n",
        );
    assert!(workload.contains("dx-marker-credentials"), "the example still has its envFrom");
    let annotation = |env: &Env| {
        let (_, out, _) = env.kubectl(&[
            "get",
            "deployment",
            "dx-ring-api",
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.template.metadata.annotations.checksum\\.dx\\.hcl\\.com/secret\\.dx-marker-credentials}",
        ]);
        out
    };
    // The API server picks the new configurations up asynchronously: apply until one stamps.
    let stamped = eventually(Duration::from_secs(15), || {
        let _ = env.kubectl_stdin(&["apply", "-f", "-"], &workload);
        let done = annotation(env).starts_with("hmac-sha256:");
        async move { done }
    })
    .await;
    assert!(stamped, "the Deployment carries its Secret checksum");
    let first = annotation(env);
    // A changed value re-stamps the workload (the rollout controller).
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &secret(SECOND));
    assert!(ok, "{err}");
    let restamped = eventually(Duration::from_secs(15), || {
        let changed = annotation(env) != first;
        async move { changed }
    })
    .await;
    assert!(restamped, "the change of the Secret rolls the Deployment");
    // Deleting the Secret in use is refused, naming it, not its value.
    let (ok, _, err) = env.kubectl(&["delete", "secret", "dx-marker-credentials", "-n", NS]);
    assert!(!ok, "the Secret in use was deleted");
    assert!(err.contains("Secret e2e-secrets/dx-marker-credentials"), "{err}");
    assert_no_marker("the denial", &err);

    // `check` on the same manifests, in every output format.
    let manifests = dir.join("manifests.yaml");
    std::fs::write(&manifests, format!("{}---\n{workload}", secret(SECOND))).unwrap();
    for format in ["text", "json", "sarif"] {
        let output = std::process::Command::new(BIN)
            .args(["check", "-f", manifests.to_str().unwrap(), "-o", format, "--schemas"])
            .arg(repo().join("schemas"))
            .output()
            .unwrap();
        let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(!printed.is_empty(), "check -o {format} printed nothing");
        assert_no_marker(&format!("check -o {format}"), &printed);
    }

    // The objects the webhook wrote, and the events.
    let (_, deployment, _) = env.kubectl(&["get", "deployment", "dx-ring-api", "-n", NS, "-o", "json"]);
    assert_no_marker("the Deployment", &deployment);
    let (_, events, _) = env.kubectl(&["get", "events", "-n", NS, "-o", "json"]);
    assert_no_marker("the events", &events);
    for (format, running) in [("json", &json), ("text", &text)] {
        let (_, metrics) = http_get(running.ops, "/metrics").await;
        assert!(metrics.contains("dx_admission_reviews_total"), "{metrics}");
        assert_no_marker(&format!("the {format} replica's metrics"), &metrics);
        let logs: Vec<String> = running.logs.try_iter().map(|line| line.to_string()).collect();
        let logs = logs.join("\n");
        assert!(logs.contains("reviewed"), "the {format} replica logged its reviews:\n{logs}");
        assert!(logs.contains("dx-marker-credentials"), "the {format} replica logged about the Secret:\n{logs}");
        assert_no_marker(&format!("the {format} replica's logs"), &logs);
    }
    let (ok, _, err) = env.kubectl(&[
        "delete",
        "validatingwebhookconfiguration,mutatingwebhookconfiguration",
        "e2e-secrets-json",
        "e2e-secrets-text",
    ]);
    assert!(ok, "{err}");
}
