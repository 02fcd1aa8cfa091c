//! What users read: denials, warnings and audit annotations, through the real TLS server, and
//! the offline `check` agreeing with the server on every example.

mod common;

use common::{TestServer, examples, review};
use dx_admission::check::{check, read_manifests};
use dx_admission::policy::schema::SchemaSet;
use dx_admission::policy::{Policy, Settings};
use serde_json::{Value, json};

fn example(set: &str, file: &str) -> Value {
    examples(set).into_iter().find(|(name, _)| name == file).map(|(_, doc)| doc).expect("example exists")
}

#[tokio::test]
async fn a_broken_deployment_is_denied_with_every_finding_and_its_causes() {
    let server = TestServer::start().await;
    let object = example("broken", "ring-api-unpinned-no-probe.yaml");
    let answer = server.validate(&review("CREATE", Some(&object), None)).await;
    assert_eq!(answer["allowed"], false);
    assert_eq!(
        answer["status"]["message"],
        "Deployment dx/dx-ring-api-unpinned rejected under DX schema v2 (2 problems):\n\
         - spec.template.spec.containers[0].image: image \"hcl/dx/ring-api:latest\" uses the moving tag latest [image-pinned] fix: use a DX release tag (e.g. :95_CF225) or an @sha256 digest\n\
         - spec.template.spec.containers[0].readinessProbe: container \"ring-api\" has no readiness probe [readiness-probe] fix: add a readinessProbe (e.g. an httpGet on the application's health endpoint)"
    );
    assert_eq!(answer["status"]["code"], 403);
    assert_eq!(answer["status"]["reason"], "Forbidden");
    assert_eq!(answer["status"]["status"], "Failure");
    assert_eq!(
        answer["status"]["details"]["causes"],
        json!([
            {"reason": "image-pinned", "field": "spec.template.spec.containers[0].image",
             "message": "image \"hcl/dx/ring-api:latest\" uses the moving tag latest"},
            {"reason": "readiness-probe", "field": "spec.template.spec.containers[0].readinessProbe",
             "message": "container \"ring-api\" has no readiness probe"}
        ])
    );
    assert_eq!(answer["status"]["details"]["name"], "dx-ring-api-unpinned");
    assert_eq!(answer["status"]["details"]["kind"], "Deployment");
    assert_eq!(
        server.metric("dx_admission_reviews_total{endpoint=\"validate\",kind=\"Deployment\",operation=\"CREATE\",verdict=\"denied\"}").await,
        1.0
    );
    assert_eq!(server.metric("dx_admission_findings_total{rule=\"image-pinned\",severity=\"deny\"}").await, 1.0);
}

#[tokio::test]
async fn a_broken_configmap_lists_schema_findings_with_values() {
    let server = TestServer::start().await;
    let object = example("broken", "core-config-bad-values.yaml");
    let answer = server.validate(&review("CREATE", Some(&object), None)).await;
    assert_eq!(answer["allowed"], false);
    assert_eq!(
        answer["status"]["message"],
        "ConfigMap dx/dx-core-config-typos rejected under DX schema v2 (6 problems):\n\
         - data[cache.entries]: \"lots\" is not an integer [schema] fix: see schemas/v2/configmap/core.json\n\
         - data[jvm.heap.max]: \"4GB\" is not a Kubernetes quantity: it has an unknown unit suffix \"GB\" (use n, u, m, k, M, G, T, P, E or Ki, Mi, Gi, Ti, Pi, Ei) [schema] fix: see schemas/v2/configmap/core.json\n\
         - data[ldap.config]: document does not match its schema: at /port: 99999 is greater than the maximum of 65535 [schema] fix: see schemas/v2/configmap/core.json\n\
         - data[session.timeout]: \"30\" is not a duration: it has a number without a unit (use ns, us, ms, s, m or h) [schema] fix: see schemas/v2/configmap/core.json\n\
         - data[jvm.heap.mx]: \"jvm.heap.mx\" is not a key of the core ConfigMap in schema v2 [schema-unknown-key] fix: did you mean \"jvm.heap.max\"?\n\
         - data[logLevel]: was renamed to \"log.level\" in schema v2 [schema-renamed-key] fix: rename data[logLevel] to data[log.level]; the value can stay"
    );
}

#[tokio::test]
async fn an_update_that_changes_claim_templates_is_explained() {
    let server = TestServer::start().await;
    let old = example("valid", "core.yaml");
    let mut new = old.clone();
    new["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = json!("20Gi");
    let answer = server.validate(&review("UPDATE", Some(&new), Some(&old))).await;
    assert_eq!(
        answer["status"]["message"],
        "StatefulSet dx/dx-core rejected under DX schema v2 (1 problem):\n\
         - spec.volumeClaimTemplates[0]: claim template \"logs\" changes: storage request 10Gi -> 20Gi [claim-templates-change] \
         fix: volumeClaimTemplates cannot change in place: to grow storage, expand each existing PVC (kubectl edit pvc, if the StorageClass allows expansion), \
         then run kubectl delete statefulset NAME --cascade=orphan and apply again with the new size; pods and data stay"
    );
}

#[tokio::test]
async fn warnings_and_audits_ride_on_allowed_answers() {
    let config = "rules:\n  image-pinned: audit\n  readiness-probe: warn\n";
    let settings: Settings = serde_yaml_ng::from_str(config).unwrap();
    let server = TestServer::start_with(move |c| c.settings = settings).await;
    let object = example("broken", "ring-api-unpinned-no-probe.yaml");
    let answer = server.validate(&review("CREATE", Some(&object), None)).await;
    assert_eq!(answer["allowed"], true, "{answer}");
    assert_eq!(
        answer["warnings"],
        json!([
            "spec.template.spec.containers[0].readinessProbe: container \"ring-api\" has no readiness probe [readiness-probe]"
        ])
    );
    assert_eq!(
        answer["auditAnnotations"],
        json!({"findings": "image-pinned spec.template.spec.containers[0].image", "update-category": "N"})
    );
    for warning in answer["warnings"].as_array().unwrap() {
        assert!(warning.as_str().unwrap().chars().count() <= 120);
    }
    assert_eq!(server.metric("dx_admission_findings_total{rule=\"image-pinned\",severity=\"audit\"}").await, 1.0);
}

/// Every admitted change of a DX object carries its update categories in the audit annotation
/// `update-category` and in `dx_admission_changes_total`; a denial and a dry run count nothing.
#[tokio::test]
async fn admitted_changes_carry_their_update_categories() {
    let server = TestServer::start().await;
    let core = example("valid", "core.yaml");
    let mut upgraded = core.clone();
    upgraded["metadata"]["labels"]["app.kubernetes.io/version"] = json!("95.226.0");
    upgraded["spec"]["template"]["spec"]["containers"][0]["image"] = json!("hcl/dx/core:95_CF226");
    let mut reconfigured = upgraded.clone();
    reconfigured["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = json!("8Gi");
    let mut migrating = core.clone();
    migrating["metadata"]["annotations"] = json!({"dx.hcl.com/persistence-schema": "2026.12"});
    let config = example("valid", "configmaps.yaml");
    let mut changed_config = config.clone();
    changed_config["data"]["log.level"] = json!("debug");
    let cases = [
        ("CREATE", Some(&core), None, Some("N")),
        ("UPDATE", Some(&upgraded), Some(&core), Some("A")),
        ("UPDATE", Some(&reconfigured), Some(&core), Some("A,C")),
        ("UPDATE", Some(&migrating), Some(&core), Some("P")),
        ("UPDATE", Some(&core), Some(&core), None),
        ("UPDATE", Some(&changed_config), Some(&config), Some("C")),
        ("DELETE", None, Some(&core), Some("R")),
        ("DELETE", None, Some(&config), Some("R")),
    ];
    for (operation, object, old, expected) in cases {
        let answer = server.validate(&review(operation, object, old)).await;
        assert_eq!(answer["allowed"], true, "{operation}: {answer}");
        assert_eq!(answer["auditAnnotations"]["update-category"].as_str(), expected, "{operation}: {answer}");
    }
    let mut dry_run = review("UPDATE", Some(&upgraded), Some(&core));
    dry_run["request"]["dryRun"] = json!(true);
    assert_eq!(server.validate(&dry_run).await["auditAnnotations"]["update-category"], "A");
    let mut broken = upgraded.clone();
    broken["spec"]["template"]["spec"]["containers"][0]["image"] = json!("hcl/dx/core:latest");
    let denied = server.validate(&review("UPDATE", Some(&broken), Some(&core))).await;
    assert_eq!((denied["allowed"].as_bool(), denied.get("auditAnnotations")), (Some(false), None));
    for (series, count) in [
        ("dx_admission_changes_total{component=\"core\",category=\"N\"}", 1.0),
        ("dx_admission_changes_total{component=\"core\",category=\"A\"}", 2.0),
        ("dx_admission_changes_total{component=\"core\",category=\"C\"}", 1.0),
        ("dx_admission_changes_total{component=\"core\",category=\"P\"}", 1.0),
        ("dx_admission_changes_total{component=\"core\",category=\"R\"}", 1.0),
        ("dx_admission_changes_total{component=\"global\",category=\"C\"}", 1.0),
        ("dx_admission_changes_total{component=\"global\",category=\"R\"}", 1.0),
    ] {
        assert_eq!(server.metric(series).await, count, "{series}");
    }
}

#[tokio::test]
async fn valid_examples_are_allowed_without_warnings() {
    let server = TestServer::start().await;
    for (file, object) in examples("valid") {
        let answer = server.validate(&review("CREATE", Some(&object), None)).await;
        assert_eq!(answer["allowed"], true, "{file}: {answer}");
        assert!(answer.get("warnings").is_none(), "{file}: {answer}");
    }
}

/// `check` and the server run one evaluation: same verdict and the same words for every example.
#[tokio::test]
async fn check_agrees_with_the_server_on_every_example() {
    let server = TestServer::start().await;
    let schemas = SchemaSet::load(&common::repo().join("schemas")).unwrap();
    let settings = Settings::default();
    let mut compared = 0;
    for set in ["valid", "broken"] {
        let dir = common::repo().join("examples").join(set);
        let manifests = read_manifests(&[dir], "default").unwrap();
        let nothing = read_manifests(&[], "default").unwrap();
        let offline = check(Policy::offline(&settings, &schemas), &manifests, &nothing);
        let served = examples(set);
        assert_eq!(offline.len(), served.len(), "{set}");
        for (checked, (file, object)) in offline.iter().zip(&served) {
            let answer = server.validate(&review("CREATE", Some(object), None)).await;
            let evaluation = &checked.evaluation;
            assert_eq!(answer["allowed"], !evaluation.denied(), "{file}");
            assert_eq!(answer["status"]["message"].as_str(), evaluation.denial_message().as_deref(), "{file}");
            compared += 1;
        }
    }
    assert_eq!(compared, 21, "13 valid and 8 broken objects");
}
