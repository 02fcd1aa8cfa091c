//! Table-driven tests: a valid DX object per kind, and for each rule the mutations that must
//! (and must not) produce a finding, asserted by rule id, path and message text.

use std::path::Path;
use std::sync::LazyLock;

use serde_json::{Value, json};

use crate::policy::evaluate::{Policy, Review, evaluate};
use crate::policy::object::{Object, ResourceKind};
use crate::policy::operation::Operation;
use crate::policy::schema::SchemaSet;
use crate::policy::settings::{Settings, Severity};

static SCHEMAS: LazyLock<SchemaSet> = LazyLock::new(|| {
    SchemaSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).expect("bundled schemas load")
});

fn container(name: &str, image: &str) -> Value {
    json!({
        "name": name,
        "image": image,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
        "livenessProbe": {"httpGet": {"path": "/live", "port": 8080}}
    })
}

fn labels(component: &str) -> Value {
    json!({"app.kubernetes.io/part-of": "dx", "app.kubernetes.io/component": component, "app.kubernetes.io/version": "95.225.0"})
}

fn core() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "dx-core", "namespace": "dx", "labels": labels("core")},
        "spec": {
            "serviceName": "dx-core", "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/component": "core"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/part-of": "dx", "app.kubernetes.io/component": "core"}},
                "spec": {
                    "containers": [json_merge(container("core", "hcl/dx/core:95_CF225"), json!({
                        "volumeMounts": [{"name": "profile", "mountPath": "/opt/HCL/wp_profile"}, {"name": "logs", "mountPath": "/opt/HCL/logs"}]
                    }))],
                    "volumes": [{"name": "profile", "persistentVolumeClaim": {"claimName": "dx-core-profile"}}]
                }
            },
            "volumeClaimTemplates": [{"metadata": {"name": "logs"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}]
        }
    })
}

fn persistence() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "dx-persistence", "namespace": "dx", "labels": labels("persistence")},
        "spec": {
            "serviceName": "dx-persistence", "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/component": "persistence"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/part-of": "dx", "app.kubernetes.io/component": "persistence"}},
                "spec": {"containers": [json_merge(container("postgres", "hcl/dx/persistence:95_CF225"), json!({
                    "volumeMounts": [{"name": "data", "mountPath": "/var/lib/pgsql"}]
                }))]}
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}}]
        }
    })
}

fn ring_api() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "dx-ring-api", "namespace": "dx", "labels": labels("ring-api")},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/component": "ring-api"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/part-of": "dx", "app.kubernetes.io/component": "ring-api"}},
                "spec": {"containers": [container("ring-api", "hcl/dx/ring-api:95_CF225")]}
            }
        }
    })
}

fn core_config() -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dx-core-config", "namespace": "dx", "labels": {"app.kubernetes.io/part-of": "dx", "app.kubernetes.io/component": "core"}},
        "data": {"log.level": "info", "jvm.heap.max": "4Gi", "session.timeout": "30m", "cache.entries": "5000",
                 "ldap.config": "host: ldap.example.com\nport: 636\nsslEnabled: true\n"}
    })
}

fn json_merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// Sets (or with `Value::Null`, removes) the value at a JSON pointer.
fn set(mut value: Value, pointer: &str, new: Value) -> Value {
    let (parent, last) = pointer.rsplit_once('/').expect("pointer");
    let last = last.replace("~1", "/");
    let target = value.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}"));
    match (target, new) {
        (Value::Object(map), Value::Null) => {
            map.remove(&last);
        }
        (Value::Object(map), new) => {
            map.insert(last, new);
        }
        (Value::Array(items), new) => items[last.parse::<usize>().expect("index")] = new,
        _ => panic!("cannot set {pointer}"),
    }
    value
}

fn object(value: Value) -> Object {
    let kind = match value["kind"].as_str() {
        Some("ConfigMap") => ResourceKind::ConfigMap,
        Some("StatefulSet") => ResourceKind::StatefulSet,
        _ => ResourceKind::Deployment,
    };
    Object::from_json(kind, value).expect("test object parses")
}

/// Findings as `rule | path | message` lines.
fn findings_with(settings: &Settings, value: Value, old: Option<Value>) -> Vec<String> {
    let object = object(value);
    let old = old.map(self::object);
    let review = Review {
        operation: if old.is_some() { Operation::Update } else { Operation::Create },
        namespace: "dx",
        object: Some(&object),
        old_object: old.as_ref(),
    };
    evaluate(Policy::offline(settings, &SCHEMAS), review)
        .findings
        .iter()
        .map(|j| format!("{} | {} | {}", j.finding.rule, j.finding.path, j.finding.message))
        .collect()
}

fn findings(value: Value) -> Vec<String> {
    findings_with(&Settings::default(), value, None)
}

#[test]
fn valid_objects_have_no_findings() {
    for (name, value) in
        [("core", core()), ("persistence", persistence()), ("ring-api", ring_api()), ("core config", core_config())]
    {
        assert_eq!(findings(value), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn foreign_objects_are_untouched() {
    let foreign = set(core(), "/metadata/labels/app.kubernetes.io~1part-of", json!("other"));
    let foreign = set(foreign, "/spec/template/spec/containers/0/image", json!("nginx"));
    assert_eq!(findings(foreign), Vec::<String>::new());
}

#[test]
fn each_rule_reports_its_finding() {
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "unknown component",
            set(core_config(), "/metadata/labels/app.kubernetes.io~1component", json!("cms")),
            &[
                "component-known | metadata.labels[app.kubernetes.io/component] | \"cms\" is not a DX application (known: core, dam, persistence, ring-api, content-composer, image-processor, global)",
            ],
        ),
        (
            "missing component",
            set(core_config(), "/metadata/labels/app.kubernetes.io~1component", Value::Null),
            &[
                "component-known | metadata.labels[app.kubernetes.io/component] | is missing; a DX object names its application (one of: core, dam, persistence, ring-api, content-composer, image-processor, global)",
            ],
        ),
        (
            "stateless as statefulset",
            set(
                set(core(), "/metadata/labels/app.kubernetes.io~1component", json!("ring-api")),
                "/spec/template/metadata/labels/app.kubernetes.io~1component",
                json!("ring-api"),
            ),
            &[
                "component-kind | metadata.labels[app.kubernetes.io/component] | ring-api runs as a Deployment, not a StatefulSet",
            ],
        ),
        (
            "global on a workload",
            set(
                set(ring_api(), "/metadata/labels/app.kubernetes.io~1component", json!("global")),
                "/spec/template/metadata/labels/app.kubernetes.io~1component",
                json!("global"),
            ),
            &[
                "component-kind | metadata.labels[app.kubernetes.io/component] | global names the deployment-wide ConfigMap and cannot label a Deployment",
            ],
        ),
        (
            "pvc on a stateless app",
            set(
                ring_api(),
                "/spec/template/spec/volumes",
                json!([{"name": "cache", "persistentVolumeClaim": {"claimName": "ring-cache"}}]),
            ),
            &[
                "stateless-no-pvc | spec.template.spec.volumes[0].persistentVolumeClaim | volume \"cache\" mounts claim \"ring-cache\", but ring-api is stateless",
            ],
        ),
        (
            "no resources",
            set(ring_api(), "/spec/template/spec/containers/0/resources", json!({})),
            &[
                "resources-required | spec.template.spec.containers[0].resources | container \"ring-api\" sets no cpu or memory requests or limits",
            ],
        ),
        (
            "missing memory limit",
            set(ring_api(), "/spec/template/spec/containers/0/resources/limits/memory", Value::Null),
            &[
                "resources-required | spec.template.spec.containers[0].resources.limits.memory | container \"ring-api\" sets no memory limit",
            ],
        ),
        (
            "bad quantity",
            set(core(), "/spec/template/spec/containers/0/resources/limits/memory", json!("4GB")),
            &[
                "resources-quantity | spec.template.spec.containers[0].resources.limits.memory | \"4GB\" is not a Kubernetes quantity: it has an unknown unit suffix \"GB\" (use n, u, m, k, M, G, T, P, E or Ki, Mi, Gi, Ti, Pi, Ei)",
            ],
        ),
        (
            "request above limit",
            set(core(), "/spec/template/spec/containers/0/resources/requests/memory", json!("3Gi")),
            &[
                "resources-request-within-limit | spec.template.spec.containers[0].resources.requests.memory | memory request 3Gi is more than its limit 2Gi",
            ],
        ),
        (
            "canonical forms compare equal",
            set(core(), "/spec/template/spec/containers/0/resources/requests/memory", json!("2048Mi")),
            &[],
        ),
        (
            "latest image",
            set(ring_api(), "/spec/template/spec/containers/0/image", json!("hcl/dx/ring-api:latest")),
            &[
                "image-pinned | spec.template.spec.containers[0].image | image \"hcl/dx/ring-api:latest\" uses the moving tag latest",
            ],
        ),
        (
            "untagged image",
            set(ring_api(), "/spec/template/spec/containers/0/image", json!("registry:5000/hcl/dx/ring-api")),
            &[
                "image-pinned | spec.template.spec.containers[0].image | image \"registry:5000/hcl/dx/ring-api\" has no tag, which means :latest",
            ],
        ),
        (
            "digest image",
            set(
                ring_api(),
                "/spec/template/spec/containers/0/image",
                json!("hcl/dx/ring-api@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            ),
            &[],
        ),
        (
            "no readiness probe",
            set(ring_api(), "/spec/template/spec/containers/0/readinessProbe", Value::Null),
            &[
                "readiness-probe | spec.template.spec.containers[0].readinessProbe | container \"ring-api\" has no readiness probe",
            ],
        ),
        (
            "init containers need no probes",
            set(
                ring_api(),
                "/spec/template/spec/initContainers",
                json!([json_merge(
                    container("init", "busybox:1.36"),
                    json!({"readinessProbe": null, "livenessProbe": null})
                )]),
            ),
            &[],
        ),
        (
            "init containers need resources",
            set(ring_api(), "/spec/template/spec/initContainers", json!([{"name": "init", "image": "busybox:1.36"}])),
            &[
                "resources-required | spec.template.spec.initContainers[0].resources | container \"init\" sets no cpu or memory requests or limits",
            ],
        ),
        (
            "no liveness probe",
            set(ring_api(), "/spec/template/spec/containers/0/livenessProbe", Value::Null),
            &[
                "liveness-probe | spec.template.spec.containers[0].livenessProbe | container \"ring-api\" has no liveness probe",
            ],
        ),
        (
            "OnDelete",
            set(core(), "/spec/updateStrategy", json!({"type": "OnDelete"})),
            &[
                "statefulset-rolling-update | spec.updateStrategy.type | is OnDelete, so pods keep old config and images until deleted by hand",
            ],
        ),
        (
            "profile from a claim template",
            set(
                set(core(), "/spec/template/spec/volumes", json!([])),
                "/spec/volumeClaimTemplates/0/metadata/name",
                json!("profile"),
            ),
            &[
                "farm-shared-storage | spec.template.spec.containers[0].volumeMounts[0] | the profile at /opt/HCL/wp_profile comes from volumeClaimTemplates[0] (\"profile\"), which gives each pod its own diverging copy",
            ],
        ),
        (
            "profile from an emptyDir",
            set(core(), "/spec/template/spec/volumes/0", json!({"name": "profile", "emptyDir": {}})),
            &[
                "farm-shared-storage | spec.template.spec.containers[0].volumeMounts[0] | the profile at /opt/HCL/wp_profile comes from volume \"profile\", which is not a persistentVolumeClaim, so it is lost with the pod",
            ],
        ),
        (
            "profile not mounted",
            set(core(), "/spec/template/spec/containers/0/volumeMounts", json!([])),
            &[
                "farm-shared-storage | spec.template.spec.containers | no container mounts the profile at /opt/HCL/wp_profile",
            ],
        ),
        (
            "persistence RWX",
            set(persistence(), "/spec/volumeClaimTemplates/0/spec/accessModes", json!(["ReadWriteMany"])),
            &[
                "persistence-rwo | spec.volumeClaimTemplates[0].spec.accessModes | claim template \"data\" asks for [ReadWriteMany]",
            ],
        ),
        (
            "persistence shared claim",
            set(
                persistence(),
                "/spec/template/spec/volumes",
                json!([{"name": "shared", "persistentVolumeClaim": {"claimName": "pg-shared"}}]),
            ),
            &[
                "persistence-no-shared-claim | spec.template.spec.volumes[0].persistentVolumeClaim | volume \"shared\" mounts claim \"pg-shared\", which every persistence replica would share",
            ],
        ),
        (
            "template labels",
            set(ring_api(), "/spec/template/metadata/labels/app.kubernetes.io~1component", json!("other")),
            &[
                "template-labels | spec.template.metadata.labels[app.kubernetes.io/component] | is \"other\" but the workload says \"ring-api\"",
            ],
        ),
        (
            "version label",
            set(ring_api(), "/metadata/labels/app.kubernetes.io~1version", Value::Null),
            &[
                "version-label | metadata.labels[app.kubernetes.io/version] | is missing; without it downgrades cannot be detected",
            ],
        ),
    ];
    for (name, value, expected) in cases {
        assert_eq!(findings(value), expected, "case: {name}");
    }
}

#[test]
fn schemas_check_configmap_values() {
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "enum",
            set(core_config(), "/data/log.level", json!("verbose")),
            &["schema | data[log.level] | \"verbose\" is not one of: error, warn, info, debug, trace"],
        ),
        (
            "integer range",
            set(core_config(), "/data/cache.entries", json!("10")),
            &["schema | data[cache.entries] | \"10\" is below the minimum 1000"],
        ),
        (
            "not an integer",
            set(core_config(), "/data/cache.entries", json!("5k")),
            &["schema | data[cache.entries] | \"5k\" is not an integer"],
        ),
        (
            "quantity bound",
            set(core_config(), "/data/jvm.heap.max", json!("128Gi")),
            &["schema | data[jvm.heap.max] | \"128Gi\" is more than the 64Gi allowed"],
        ),
        (
            "not a quantity",
            set(core_config(), "/data/jvm.heap.max", json!("4GB")),
            &[
                "schema | data[jvm.heap.max] | \"4GB\" is not a Kubernetes quantity: it has an unknown unit suffix \"GB\" (use n, u, m, k, M, G, T, P, E or Ki, Mi, Gi, Ti, Pi, Ei)",
            ],
        ),
        (
            "duration",
            set(core_config(), "/data/session.timeout", json!("30")),
            &[
                "schema | data[session.timeout] | \"30\" is not a duration: it has a number without a unit (use ns, us, ms, s, m or h)",
            ],
        ),
        (
            "duration bound",
            set(core_config(), "/data/session.timeout", json!("48h")),
            &["schema | data[session.timeout] | \"48h\" is more than the 24h allowed"],
        ),
        (
            "yaml document",
            set(core_config(), "/data/ldap.config", json!("host: ldap\nport: 99999\n")),
            &[
                "schema | data[ldap.config] | document does not match its schema: at /port: 99999 is greater than the maximum of 65535",
            ],
        ),
        ("yaml syntax", set(core_config(), "/data/ldap.config", json!("host: [")), &[]),
        (
            "required",
            set(core_config(), "/data/jvm.heap.max", Value::Null),
            &["schema | data[jvm.heap.max] | is required but missing"],
        ),
        (
            "unknown key with suggestion",
            set(core_config(), "/data/jvm.heap.mx", json!("1Gi")),
            &[
                "schema-unknown-key | data[jvm.heap.mx] | \"jvm.heap.mx\" is not a key of the core ConfigMap in schema v2",
            ],
        ),
        (
            "renamed key",
            set(set(core_config(), "/data/log.level", Value::Null), "/data/logLevel", json!("info")),
            &["schema-renamed-key | data[logLevel] | was renamed to \"log.level\" in schema v2"],
        ),
        (
            "v1 still accepts the old key",
            set(
                set(set(core_config(), "/data/log.level", Value::Null), "/data/logLevel", json!("info")),
                "/metadata/annotations",
                json!({"dx.hcl.com/schema-version": "v1"}),
            ),
            &[],
        ),
        (
            "unknown version",
            set(core_config(), "/metadata/annotations", json!({"dx.hcl.com/schema-version": "v9"})),
            &[
                "schema-version-known | metadata.annotations[dx.hcl.com/schema-version] | \"v9\" is not a known schema version (known: v1, v2)",
            ],
        ),
        (
            "workload schema",
            set(ring_api(), "/spec/replicas", json!(0)),
            &["schema | spec.replicas | 0 is less than the minimum of 1"],
        ),
    ];
    for (name, value, expected) in cases {
        let got = findings(value);
        if name == "yaml syntax" {
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(got[0].starts_with("schema | data[ldap.config] | is not valid YAML: "), "{got:?}");
            continue;
        }
        assert_eq!(got, expected, "case: {name}");
    }
}

#[test]
fn unknown_key_findings_suggest_the_near_key() {
    let object = object(set(core_config(), "/data/jvm.heap.mx", json!("1Gi")));
    let review = Review { operation: Operation::Create, namespace: "dx", object: Some(&object), old_object: None };
    let evaluation = evaluate(Policy::offline(&Settings::default(), &SCHEMAS), review);
    assert_eq!(evaluation.findings[0].finding.hint.as_deref(), Some("did you mean \"jvm.heap.max\"?"));
}

#[test]
fn schemas_may_declare_unknown_keys_as_warnings() {
    let config = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ip", "namespace": "dx", "labels": {"app.kubernetes.io/part-of": "dx", "app.kubernetes.io/component": "image-processor"}},
        "data": {"workers": "4", "extra": "x"}
    });
    let object = object(config);
    let review = Review { operation: Operation::Create, namespace: "dx", object: Some(&object), old_object: None };
    let evaluation = evaluate(Policy::offline(&Settings::default(), &SCHEMAS), review);
    assert!(!evaluation.denied());
    assert_eq!(
        evaluation.warnings(),
        vec!["data[extra]: \"extra\" is not a key of the image-processor ConfigMap in schema v2 [schema-unknown-key]"]
    );
}

#[test]
fn update_rules_compare_with_the_stored_object() {
    let old = core();
    let grown = set(core(), "/spec/volumeClaimTemplates/0/spec/resources/requests/storage", json!("20Gi"));
    let got = findings_with(&Settings::default(), grown, Some(old.clone()));
    assert_eq!(
        got,
        [
            "claim-templates-change | spec.volumeClaimTemplates[0] | claim template \"logs\" changes: storage request 10Gi -> 20Gi",
            // A claim template change is category P: offline, the backup gate cannot judge.
            "backup-before-update | StatefulSet dx/dx-core | not judged: no cluster is connected",
        ]
    );

    // The API server stores templates defaulted; a semantically equal template is no change.
    let defaulted = set(old.clone(), "/spec/volumeClaimTemplates/0/spec/volumeMode", json!("Filesystem"));
    let defaulted = set(defaulted, "/spec/volumeClaimTemplates/0/spec/resources/requests/storage", json!("10240Mi"));
    assert_eq!(findings_with(&Settings::default(), core(), Some(defaulted)), Vec::<String>::new());

    let downgraded = set(core(), "/metadata/labels/app.kubernetes.io~1version", json!("95.220.0"));
    assert_eq!(
        findings_with(&Settings::default(), downgraded.clone(), Some(old.clone())),
        [
            "version-downgrade | metadata.labels[app.kubernetes.io/version] | 95.225.0 -> 95.220.0 is a downgrade; a rollback needs the backup taken before the update to 95.225.0",
            "backup-before-update | StatefulSet dx/dx-core | not judged: no cluster is connected",
        ]
    );
    let declared = set(downgraded, "/metadata/annotations", json!({"dx.hcl.com/allow-downgrade": "true"}));
    let not_judged = ["backup-before-update | StatefulSet dx/dx-core | not judged: no cluster is connected"];
    assert_eq!(findings_with(&Settings::default(), declared, Some(old.clone())), not_judged);
    let upgraded = set(core(), "/metadata/labels/app.kubernetes.io~1version", json!("95.230.0"));
    assert_eq!(findings_with(&Settings::default(), upgraded, Some(old)), not_judged);
    // ConfigMaps go down a version the same way (a helm rollback applies them first).
    let map = set(core_config(), "/metadata/labels/app.kubernetes.io~1version", json!("95.225.0"));
    let map_down = set(core_config(), "/metadata/labels/app.kubernetes.io~1version", json!("95.220.0"));
    assert_eq!(
        findings_with(&Settings::default(), map_down.clone(), Some(map.clone())),
        [
            "version-downgrade | metadata.labels[app.kubernetes.io/version] | 95.225.0 -> 95.220.0 is a downgrade; a rollback needs the backup taken before the update to 95.225.0"
        ]
    );
    assert_eq!(
        findings_with(&Settings::default(), map_down, Some(core_config())),
        Vec::<String>::new(),
        "without the label on both sides the rule does not apply"
    );
}

#[test]
fn severity_settings_turn_denials_into_warnings_and_audits() {
    let latest = set(ring_api(), "/spec/template/spec/containers/0/image", json!("hcl/dx/ring-api:latest"));
    let settings: Settings = serde_yaml_ng::from_str("rules: {image-pinned: audit}").unwrap();
    let object = object(latest);
    let review = Review { operation: Operation::Create, namespace: "dx", object: Some(&object), old_object: None };
    let evaluation = evaluate(Policy::offline(&settings, &SCHEMAS), review);
    assert!(!evaluation.denied());
    assert_eq!(evaluation.findings[0].severity, Severity::Audit);

    let warn_mode: Settings = serde_yaml_ng::from_str("mode: warn").unwrap();
    let evaluation = evaluate(Policy::offline(&warn_mode, &SCHEMAS), review);
    assert!(!evaluation.denied());
    assert_eq!(
        evaluation.warnings(),
        vec![
            "spec.template.spec.containers[0].image: image \"hcl/dx/ring-api:latest\" uses the moving tag latest [image-pinned]"
        ]
    );
}

#[test]
fn denial_message_lists_every_finding_in_order() {
    let broken = set(ring_api(), "/spec/template/spec/containers/0/image", json!("hcl/dx/ring-api:latest"));
    let broken = set(broken, "/spec/template/spec/containers/0/readinessProbe", Value::Null);
    let object = object(broken);
    let review = Review { operation: Operation::Create, namespace: "dx", object: Some(&object), old_object: None };
    let evaluation = evaluate(Policy::offline(&Settings::default(), &SCHEMAS), review);
    assert_eq!(
        evaluation.denial_message().unwrap(),
        "Deployment dx/dx-ring-api rejected under DX schema v2 (2 problems):\n\
         - spec.template.spec.containers[0].image: image \"hcl/dx/ring-api:latest\" uses the moving tag latest [image-pinned] fix: use a DX release tag (e.g. :95_CF225) or an @sha256 digest\n\
         - spec.template.spec.containers[0].readinessProbe: container \"ring-api\" has no readiness probe [readiness-probe] fix: add a readinessProbe (e.g. an httpGet on the application's health endpoint)"
    );
}

#[test]
fn deletes_are_not_checked_by_the_write_rules() {
    let object = object(set(ring_api(), "/spec/template/spec/containers/0/image", json!("nginx")));
    let review = Review { operation: Operation::Delete, namespace: "dx", object: None, old_object: Some(&object) };
    let evaluation = evaluate(Policy::offline(&Settings::default(), &SCHEMAS), review);
    assert!(evaluation.findings.is_empty());
    assert_eq!(evaluation.object_name, "dx/dx-ring-api");
}

/// The fix texts name the applications as literals (rule texts are `&'static str`); they must say
/// what `Component` says, so the list of DX applications has one home.
#[test]
fn rule_texts_name_the_dx_applications_of_the_component_list() {
    use crate::policy::object::Component;
    let names = |kind: Option<ResourceKind>| -> Vec<&str> {
        Component::ALL
            .into_iter()
            .filter(|c| kind.is_none_or(|k| c.workload_kind() == Some(k)))
            .map(Component::as_str)
            .collect()
    };
    let workloads: Vec<&str> = names(None).into_iter().filter(|n| *n != Component::Global.as_str()).collect();
    assert_eq!(
        crate::policy::rules::rule("component-known").unwrap().fix,
        format!("set label app.kubernetes.io/component to {} (or global on a ConfigMap)", workloads.join(", "))
    );
    let (stateful, stateless) = (names(Some(ResourceKind::StatefulSet)), names(Some(ResourceKind::Deployment)));
    let and = |list: &[&str]| format!("{} and {}", list[..list.len() - 1].join(", "), list[list.len() - 1]);
    assert_eq!(
        crate::policy::rules::rule("component-kind").unwrap().fix,
        format!("deploy {} as StatefulSets and {} as Deployments", and(&stateful), and(&stateless))
    );
}
