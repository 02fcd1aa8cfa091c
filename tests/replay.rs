//! Replays AdmissionReview bodies a real kube-apiserver sent during the end-to-end run
//! (`tests/fixtures/admission-reviews/e2e/`, refreshed with `DX_E2E_UPDATE_FIXTURES=1 cargo test --test e2e`).

mod common;

use common::{TestServer, repo};
use serde_json::Value;

fn captured() -> Vec<(String, Value)> {
    let dir = repo().join("tests/fixtures/admission-reviews/e2e");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            (
                f.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn replayed_api_server_requests_get_the_same_verdicts() {
    let server = TestServer::start().await;
    let bodies = captured();
    assert!(bodies.len() >= 12, "the capture holds the e2e run's requests");
    for (file, body) in &bodies {
        let answer = server.validate(body).await;
        assert_eq!(answer["uid"], body["request"]["uid"], "{file}");
        if file.contains("dx-core-config-typos") {
            assert_eq!(answer["allowed"], false, "{file}");
            let message = answer["status"]["message"].as_str().unwrap();
            assert!(
                message.starts_with(
                    "ConfigMap e2e-capture/dx-core-config-typos rejected under DX schema v2 (6 problems):\n"
                ),
                "{message}"
            );
            assert!(message.contains("- data[jvm.heap.mx]: \"jvm.heap.mx\" is not a key of the core ConfigMap in schema v2 [schema-unknown-key] fix: did you mean \"jvm.heap.max\"?"), "{message}");
        } else if file.contains("delete-configmap") {
            // The delete guard's rule needs the workload index, which this server (no --cluster)
            // does not have: it says so rather than pass in silence.
            assert_eq!(answer["allowed"], true, "{file}: {answer}");
            assert_eq!(
                answer["warnings"],
                serde_json::json!([
                    "ConfigMap e2e-capture/dx-dam-config: not judged: dx-admission runs without --cluster [config-in-use]"
                ]),
                "{file}"
            );
        } else {
            assert_eq!(answer["allowed"], true, "{file}: {answer}");
            assert!(answer.get("warnings").is_none(), "{file}: {answer}");
        }
    }
}

/// The API server stores claim templates defaulted (apiVersion, kind, volumeMode, status), and
/// sends them so on every UPDATE: the comparison must see no change.
#[tokio::test]
async fn a_real_statefulset_update_with_defaulted_claim_templates_is_no_template_change() {
    let (_, update) =
        captured().into_iter().find(|(f, _)| f.contains("update-statefulset")).expect("an UPDATE was captured");
    let old = &update["request"]["oldObject"]["spec"]["volumeClaimTemplates"][0];
    assert_eq!(old["status"]["phase"], "Pending", "the stored template is defaulted");
    assert_eq!(old["spec"]["volumeMode"], "Filesystem");
    let server = TestServer::start().await;
    assert_eq!(server.validate(&update).await["allowed"], true);
}
