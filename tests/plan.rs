//! `dx-admission plan` as operators run it, offline against previous manifests: the words it
//! prints, its JSON and Markdown, and its exit codes. The cluster side runs end to end
//! (`tests/e2e/plan.rs`).

mod common;

use std::path::Path;

use common::repo;
use serde_json::{Value, json};

fn plan(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let args: Vec<&str> = std::iter::once("plan").chain(args.iter().copied()).collect();
    common::binary::command(&args, stdin.unwrap_or(""))
}

/// A copy of `examples/valid` with `edit` applied to the text of each file.
fn update(dir: &Path, edit: impl Fn(&str, String) -> Option<String>) -> String {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(repo().join("examples/valid")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if let Some(text) = edit(&name, std::fs::read_to_string(&path).unwrap()) {
            std::fs::write(dir.join(&name), text).unwrap();
        }
    }
    dir.display().to_string()
}

fn replaced(text: String, pairs: &[(&str, &str)]) -> String {
    pairs.iter().fold(text, |text, (from, to)| {
        assert!(text.contains(from), "{from:?} not in the example");
        text.replace(from, to)
    })
}

/// DX Core to a new release, and a DAM-only key of the global ConfigMap.
fn upgrade(name: &str, text: String) -> Option<String> {
    Some(match name {
        "core.yaml" => replaced(
            text,
            &[
                ("hcl/dx/core:95_CF225", "hcl/dx/core:95_CF226"),
                ("app.kubernetes.io/version: 95.225.0", "app.kubernetes.io/version: 95.226.0"),
            ],
        ),
        "configmaps.yaml" => replaced(text, &[("https://cdn.example.com/dam", "https://cdn2.example.com/dam")]),
        _ => text,
    })
}

#[test]
fn a_plan_says_what_changes_of_which_category_and_what_rolls() {
    let temp = tempfile::tempdir().unwrap();
    let new = update(temp.path(), upgrade);
    let (code, out, err) = plan(&["-f", &new, "--old", "examples/valid"], None);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert_eq!(
        out,
        "Plan against the previous manifests: 13 DX objects\n\
         \n\
         ConfigMap dx/dx-global-config: changed [C]\n  \
           key dam.cdn.url: https://cdn.example.com/dam -> https://cdn2.example.com/dam\n\
         \n\
         StatefulSet dx/dx-core: changed [A], pods roll\n  \
           version: 95.225.0 -> 95.226.0\n  \
           image of container core: hcl/dx/core:95_CF225 -> hcl/dx/core:95_CF226\n  \
           rolls: its pod template changes\n  \
           Warning: StatefulSet dx/dx-core: not judged: no cluster is connected [backup-before-update]\n  \
           backup needed first: a category A change of core; whether there is one is not judged: no cluster is connected\n\
         \n\
         StatefulSet dx/dx-dam: unchanged, pods roll\n  \
           rolls: ConfigMap dx-global-config changes\n\
         \n\
         Unchanged, pods stay: ConfigMap dx/dx-content-composer-config, ConfigMap dx/dx-core-config, ConfigMap dx/dx-dam-config, \
         ConfigMap dx/dx-image-processor-config, ConfigMap dx/dx-persistence-config, ConfigMap dx/dx-ring-api-config, \
         StatefulSet dx/dx-persistence, Deployment dx/dx-content-composer, Deployment dx/dx-image-processor, Deployment dx/dx-ring-api\n\
         \n\
         A application changes:         1\n\
         C configuration changes:       1\n\
         P persistence schema changes:  0\n\
         N new applications:            0\n\
         R removals:                    0\n\
         Pods roll in 2 workloads: StatefulSet dx/dx-core, StatefulSet dx/dx-dam\n\
         Verdict: the update would be admitted\n"
    );
}

#[test]
fn what_kubernetes_or_the_rules_would_refuse_exits_1_before_anything_is_applied() {
    let temp = tempfile::tempdir().unwrap();
    let new = update(temp.path(), |name, text| {
        Some(match name {
            "core.yaml" => replaced(text, &[("storage: 10Gi", "storage: 20Gi")]),
            "ring-api.yaml" => replaced(text, &[("hcl/dx/ring-api:95_CF225", "hcl/dx/ring-api:latest")]),
            "dam.yaml" => replaced(text, &[("serviceName: dx-dam", "serviceName: dx-dam-headless")]),
            _ => text,
        })
    });
    let (code, out, _) = plan(&["-f", &new, "--old", "examples/valid"], None);
    assert_eq!(code, 1, "{out}");
    let changed: Vec<&str> = out.split("\n\n").filter(|block| !block.starts_with("Unchanged")).collect();
    assert_eq!(
        changed[1],
        "StatefulSet dx/dx-core: changed [P]\n  \
         spec.volumeClaimTemplates[logs].spec.resources.requests.storage: 10Gi -> 20Gi\n  \
         refused by Kubernetes: spec.volumeClaimTemplates: Kubernetes refuses to update it (\"spec: Forbidden: updates to \
         statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', \
         'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden\")\n  \
         denied by dx-admission: StatefulSet dx/dx-core rejected under DX schema v2 (1 problem):\n    \
         - spec.volumeClaimTemplates[0]: claim template \"logs\" changes: storage request 10Gi -> 20Gi [claim-templates-change] \
         fix: volumeClaimTemplates cannot change in place: to grow storage, expand each existing PVC (kubectl edit pvc, if the \
         StorageClass allows expansion), then run kubectl delete statefulset NAME --cascade=orphan and apply again with the new \
         size; pods and data stay\n  \
         Warning: StatefulSet dx/dx-core: not judged: no cluster is connected [backup-before-update]\n  \
         backup needed first: a category P change of core; whether there is one is not judged: no cluster is connected"
    );
    assert_eq!(
        changed[2],
        "StatefulSet dx/dx-dam: changed [C]\n  \
         spec.serviceName: dx-dam -> dx-dam-headless\n  \
         refused by Kubernetes: spec.serviceName: Kubernetes refuses to update it (\"spec: Forbidden: updates to \
         statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', \
         'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden\")"
    );
    assert_eq!(
        changed[3],
        "Deployment dx/dx-ring-api: changed [A], pods roll\n  \
         image of container ring-api: hcl/dx/ring-api:95_CF225 -> hcl/dx/ring-api:latest\n  \
         rolls: its pod template changes\n  \
         denied by dx-admission: Deployment dx/dx-ring-api rejected under DX schema v2 (1 problem):\n    \
         - spec.template.spec.containers[0].image: image \"hcl/dx/ring-api:latest\" uses the moving tag latest \
         [image-pinned] fix: use a DX release tag (e.g. :95_CF225) or an @sha256 digest"
    );
    assert!(
        out.ends_with("Verdict: part of this update would be refused: fix the objects above before helm upgrade\n"),
        "{out}"
    );
}

/// Removes the YAML document that defines `name` from a multi-document text.
fn without_document(text: String, name: &str) -> String {
    let kept: Vec<&str> = text.split("\n---\n").filter(|doc| !doc.contains(&format!("name: {name}\n"))).collect();
    assert_ne!(kept.len(), text.split("\n---\n").count(), "{name} not found");
    kept.join("\n---\n")
}

#[test]
fn new_applications_removals_and_a_config_map_still_in_use() {
    let temp = tempfile::tempdir().unwrap();
    let old = update(&temp.path().join("old"), |name, text| (name != "image-processor.yaml").then_some(text));
    let new = update(&temp.path().join("new"), |name, text| match name {
        "content-composer.yaml" => None,
        "configmaps.yaml" => Some(without_document(text, "dx-ring-api-config")),
        _ => Some(text),
    });
    let (code, out, _) = plan(&["-f", &new, "--old", &old, "-o", "json"], None);
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let brief: Vec<Value> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["change"] != "unchanged" || o["rolls"] == true)
        .map(|o| {
            json!([
                o["kind"],
                o["name"],
                o["change"],
                o["categories"],
                o["rolls"],
                o["roll_reasons"],
                o["denied"].is_string()
            ])
        })
        .collect();
    assert_eq!(
        brief,
        [
            json!(["ConfigMap", "dx-ring-api-config", "removed", ["R"], false, [], true]),
            json!(["Deployment", "dx-content-composer", "removed", ["R"], false, [], false]),
            json!(["Deployment", "dx-image-processor", "added", ["N"], false, [], false]),
            json!([
                "Deployment",
                "dx-ring-api",
                "unchanged",
                [],
                true,
                ["ConfigMap dx-ring-api-config is removed"],
                false
            ]),
        ]
    );
    let removed = &report["objects"].as_array().unwrap().iter().find(|o| o["name"] == "dx-ring-api-config").unwrap();
    assert_eq!(
        removed["denied"],
        "ConfigMap dx/dx-ring-api-config rejected: it is still in use (1 problem):\n\
         - ConfigMap dx/dx-ring-api-config: still used by Deployment dx/dx-ring-api [config-in-use] fix: remove the reference \
         from those workloads (or mark it optional: true) and apply them, then delete"
    );
    assert_eq!(report["categories"], json!({"A": 0, "C": 0, "P": 0, "N": 1, "R": 2}));
    assert_eq!(report["rolls"], json!(["Deployment dx/dx-ring-api"]));
    assert_eq!((report["admitted"].as_bool(), report["removals_judged"].as_bool()), (Some(false), Some(true)));
}

fn with_credentials(name: &str, text: String, password: &str) -> Option<String> {
    match name {
        "persistence.yaml" => Some(replaced(
            text,
            &[(
                "        envFrom:\n",
                "        env:\n        - name: PGPASSWORD\n          valueFrom:\n            secretKeyRef: {name: dx-persistence-credentials, key: password}\n        envFrom:\n",
            )],
        )),
        "configmaps.yaml" => Some(format!(
            "{text}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: dx-persistence-credentials, namespace: dx}}\nstringData: {{password: {password}}}\n"
        )),
        _ => Some(text),
    }
}

/// A Secret a DX workload uses is planned under that workload's component, by key name only.
#[test]
fn a_secret_change_rolls_its_workload_and_no_value_is_printed() {
    let temp = tempfile::tempdir().unwrap();
    let old = update(&temp.path().join("old"), |name, text| with_credentials(name, text, "first-Secret-1"));
    let new = update(&temp.path().join("new"), |name, text| with_credentials(name, text, "second-Secret-2"));
    for format in ["text", "json", "markdown"] {
        let (code, out, _) = plan(&["-f", &new, "--old", &old, "-o", format], None);
        assert_eq!(code, 0, "{out}");
        for value in ["first-Secret-1", "second-Secret-2", "Zmlyc3QtU2VjcmV0LTE", "c2Vjb25kLVNlY3JldC0y"] {
            assert!(!out.contains(value), "{format} shows a Secret value: {out}");
        }
        if format == "text" {
            let blocks: Vec<&str> = out.split("\n\n").collect();
            assert_eq!(
                &blocks[1..3],
                [
                    "Secret dx/dx-persistence-credentials: changed [C]\n  key password changed",
                    "StatefulSet dx/dx-persistence: unchanged, pods roll\n  rolls: Secret dx-persistence-credentials changes",
                ]
            );
        }
        if format == "json" {
            let report: Value = serde_json::from_str(&out).unwrap();
            let secret = &report["objects"].as_array().unwrap().iter().find(|o| o["kind"] == "Secret").unwrap();
            assert_eq!(
                (secret["component"].as_str(), secret["categories"].clone()),
                (Some("persistence"), json!(["C"]))
            );
        }
    }
    // Unchanged data is an unchanged Secret: nothing rolls.
    let (code, out, _) = plan(&["-f", &old, "--old", &old], None);
    assert_eq!(code, 0);
    assert!(out.contains("Pods roll in 0 workloads\n"), "{out}");
}

#[test]
fn markdown_for_a_pull_request() {
    let temp = tempfile::tempdir().unwrap();
    let new = update(temp.path(), upgrade);
    let (code, out, _) = plan(&["-f", &new, "--old", "examples/valid", "-o", "markdown"], None);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "### dx-admission plan against the previous manifests\n\
         \n\
         | object | change | categories | pods roll | what changes |\n\
         |---|---|---|---|---|\n\
         | `ConfigMap dx/dx-global-config` | changed | C | no | key dam.cdn.url: https://cdn.example.com/dam -> https://cdn2.example.com/dam |\n\
         | `StatefulSet dx/dx-core` | changed | A | yes: its pod template changes | version: 95.225.0 -> 95.226.0<br>image of container core: hcl/dx/core:95_CF225 -> hcl/dx/core:95_CF226 |\n\
         | `StatefulSet dx/dx-dam` | unchanged |  | yes: ConfigMap dx-global-config changes |  |\n\
         \n\
         10 DX objects unchanged. Categories: A 1, C 1, P 0, N 0, R 0.\n\
         \n\
         **Backup needed first:**\n\
         \n\
         - `StatefulSet dx/dx-core`: a category A change of core; whether there is one is not judged: no cluster is connected\n\
         \n\
         **Verdict:** the update would be admitted.\n"
    );
}

#[test]
fn helm_template_output_on_stdin_and_input_errors_exit_2() {
    let mut files: Vec<_> =
        std::fs::read_dir(repo().join("examples/valid")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let all: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap() + "\n---\n").collect();
    let changed = all.replace("log.level: info", "log.level: debug");
    let (code, out, err) = plan(&["-f", "-", "--old", "examples/valid"], Some(&changed));
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(
        out.ends_with(
            "C configuration changes:       6\n\
             P persistence schema changes:  0\n\
             N new applications:            0\n\
             R removals:                    0\n\
             Pods roll in 6 workloads: StatefulSet dx/dx-core, StatefulSet dx/dx-dam, StatefulSet dx/dx-persistence, \
             Deployment dx/dx-content-composer, Deployment dx/dx-image-processor, Deployment dx/dx-ring-api\n\
             Verdict: the update would be admitted\n"
        ),
        "log.level of six ConfigMaps (the persistence one has none): {out}"
    );
    for (args, expected) in [
        (vec!["-f", "examples/valid"], "the following required arguments were not provided:\n  --old <OLD>"),
        (
            vec!["-f", "examples/valid", "--old", "examples/valid", "--cluster"],
            "the argument '--old <OLD>' cannot be used with '--cluster'",
        ),
        (vec!["-f", "examples/nothing-here.yaml", "--old", "examples/valid"], "error: examples/nothing-here.yaml: "),
        (
            vec!["-f", "examples/valid", "--old", "examples/valid", "--checksum-key-file", "Cargo.lock.missing"],
            "error: --checksum-key-file Cargo.lock.missing: ",
        ),
        (vec!["-f", "examples/valid", "--old", "examples/valid", "--schemas", "examples"], "error: --schemas: "),
    ] {
        let (code, out, err) = plan(&args, None);
        assert_eq!((code, out.as_str()), (2, ""), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
