//! The DX example release: `examples/valid` installed, upgraded and rolled back as a Helm
//! release, judged and stamped by the chart's replicas, with rollouts counted as users count
//! them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::repo;
use crate::workloads::{roll, wait_until_rolled_out};
use crate::{Env, chart};

pub const RELEASE: &str = "dx-example";
const NAMESPACE: &str = "dx-release";

/// The DX example deployment as a Helm chart: the templates are `examples/valid/` with the
/// release's namespace and the values of `values.yaml` (`ringApi.tag`, `ringApi.logLevel`,
/// `core.tag`, `dam.cdnUrl`, `version`); the chart's metadata
/// is in `tests/e2e/charts/dx-example/`. Written into `dir`, returned as the chart's path.
pub fn dx_example_chart(dir: &Path) -> PathBuf {
    let chart = dir.join("dx-example");
    let templates = chart.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let source = repo().join("tests/e2e/charts/dx-example");
    for file in ["Chart.yaml", "values.yaml"] {
        std::fs::copy(source.join(file), chart.join(file)).unwrap();
    }
    for entry in std::fs::read_dir(repo().join("examples/valid")).unwrap() {
        let path = entry.unwrap().path();
        let text =
            std::fs::read_to_string(&path).unwrap().replace("namespace: dx\n", "namespace: {{ .Release.Namespace }}\n");
        let text = text
            .replace("hcl/dx/ring-api:95_CF225", "hcl/dx/ring-api:{{ .Values.ringApi.tag }}")
            .replace("hcl/dx/core:95_CF225", "hcl/dx/core:{{ .Values.core.tag }}")
            .replace("dam.cdn.url: https://cdn.example.com/dam\n", "dam.cdn.url: {{ .Values.dam.cdnUrl }}\n")
            .replace(
                "app.kubernetes.io/version: 95.225.0\n",
                "app.kubernetes.io/version: {{ .Values.version | quote }}\n",
            );
        let text = text
            .split("\n---\n")
            .map(|document| {
                if document.contains("name: dx-ring-api-config\n") {
                    document.replace("log.level: info\n", "log.level: {{ .Values.ringApi.logLevel }}\n")
                } else {
                    document.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n---\n");
        std::fs::write(templates.join(path.file_name().unwrap()), text).unwrap();
    }
    chart
}

fn chart_path(env: &Env) -> String {
    dx_example_chart(env.cluster.dir.path()).to_str().unwrap().to_owned()
}

/// The whole DX deployment installed by Helm: every pod Ready on the simulated nodes.
pub async fn the_dx_example_release_installs_and_every_pod_turns_ready(env: &mut Env) {
    let chart = chart_path(env);
    let started = Instant::now();
    let (ok, out, err) = chart::helm(
        env,
        &["install", RELEASE, &chart, "--namespace", NAMESPACE, "--create-namespace", "--wait=hookOnly"],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("STATUS: deployed"), "{out}");
    let rolled_out = wait_until_rolled_out(env, NAMESPACE, Duration::from_secs(180)).await;
    let ready = rolled_out.pods.iter().filter(|p| p.ready).count();
    println!(
        "e2e: helm install of the DX example: {ready} pods Ready {:.1}s after it began",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(ready, 12, "{:?}", rolled_out.pods);
    assert_eq!(rolled_out.replica_sets.len(), 3, "one ReplicaSet per Deployment: {:?}", rolled_out.replica_sets);
}

/// `helm upgrade` that changes RingAPI's ConfigMap and its Deployment together rolls RingAPI
/// once: the webhook stamps the Deployment Helm sends, the controller has nothing left to do.
pub async fn helm_upgrade_of_a_config_map_and_its_deployment_rolls_once(env: &mut Env) {
    let chart = chart_path(env);
    let rolled = roll(env, NAMESPACE, 1, |env| {
        let (ok, out, err) = chart::helm(
            env,
            &[
                "upgrade",
                RELEASE,
                &chart,
                "--namespace",
                NAMESPACE,
                "--set",
                "ringApi.tag=95_CF226,ringApi.logLevel=debug",
            ],
        );
        assert!(ok, "{out}{err}");
    })
    .await;
    rolled.report("helm upgrade of RingAPI's ConfigMap and image");
    assert_eq!(rolled.counts(), ["deployment/dx-ring-api: 1"]);
    let set = &rolled.new_replica_sets["dx-ring-api"][0];
    assert_eq!((set.revision, set.replicas, set.ready), (2, 2, 2), "{set:?}");
}

/// `helm rollback` to the first revision makes no new ReplicaSet: the first one scales back up
/// with the next revision number, and its pods carry the first checksum again.
pub async fn helm_rollback_scales_the_previous_replica_set_back_up(env: &mut Env) {
    let before = crate::workloads::snapshot(env, NAMESPACE);
    let first =
        before.replica_sets_of("dx-ring-api").into_iter().find(|r| r.revision == 1).cloned().expect("revision 1");
    assert_eq!(first.replicas, 0, "scaled down by the upgrade: {first:?}");
    let rolled = roll(env, NAMESPACE, 0, |env| {
        let (ok, out, err) = chart::helm(env, &["rollback", RELEASE, "1", "--namespace", NAMESPACE]);
        assert!(ok, "{out}{err}");
    })
    .await;
    assert_eq!(rolled.counts(), Vec::<String>::new(), "no new ReplicaSet or revision");
    let sets = rolled.after.replica_sets_of("dx-ring-api");
    let revived = sets.iter().find(|r| r.name == first.name).expect("the first ReplicaSet");
    assert_eq!((revived.revision, revived.replicas, revived.ready), (3, 2, 2), "{sets:?}");
    let pods: Vec<_> = rolled.after.pods.iter().filter(|p| p.owner == format!("ReplicaSet/{}", first.name)).collect();
    assert_eq!(pods.len(), 2, "{:?}", rolled.after.pods);
    assert!(pods.iter().all(|p| p.checksum == first.checksum && p.checksum.is_some()), "{pods:?} {first:?}");
    println!("e2e: helm rollback: 0 new ReplicaSets; {} back to 2 replicas as revision 3", first.name);
}

/// What the next upgrade sets: DX Core's image (A), a DAM-only key of the global ConfigMap (C,
/// DAM alone by `dxConsumers`), RingAPI's log level (C).
pub const UPGRADE: &str = "core.tag=95_CF226,dam.cdnUrl=https://cdn2.example.com/dam,ringApi.logLevel=warn";

/// `dx-admission plan` run as the operator runs it before `helm upgrade`, on the rendered chart.
fn plan(env: &Env, manifests: &str, format: &str) -> (i32, String) {
    let kubeconfig = env.cluster.kubeconfig.to_str().unwrap();
    let args = [
        "plan",
        "-f",
        "-",
        "--cluster",
        "--kubeconfig",
        kubeconfig,
        "--release",
        RELEASE,
        "-n",
        NAMESPACE,
        "-o",
        format,
    ];
    let (code, out, err) = crate::common::binary::command(&args, manifests);
    assert_eq!(err, "", "plan wrote to stderr");
    (code, out)
}

/// A series summed over the chart's replicas (each counts the reviews it answered).
pub async fn fleet_sum(env: &Env, series: &str) -> f64 {
    let fleet = env.fleet.as_ref().expect("the chart's replicas");
    let mut sum = 0.0;
    for identity in fleet.replicas.keys() {
        sum += fleet.metric(identity, series).await;
    }
    sum
}

/// The audit annotations the API server logged for writes of `resource/name` in the release's
/// namespace, in order.
fn audited_categories(env: &Env, resource: &str, name: &str) -> Vec<(String, String)> {
    let log = std::fs::read_to_string(env.cluster.dir.path().join(crate::cluster::AUDIT_LOG)).unwrap_or_default();
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["objectRef"]["resource"] == resource && event["objectRef"]["name"] == name)
        .filter_map(|event| {
            let annotations = event["annotations"].as_object()?;
            let (key, value) = annotations.iter().find(|(k, _)| k.ends_with("/update-category"))?;
            Some((key.clone(), value.as_str()?.to_owned()))
        })
        .collect()
}

/// `plan --cluster` on the `helm template` output of the next upgrade names exactly the
/// workloads whose pods the upgrade then rolls, calls every other object unchanged (the live
/// objects are defaulted, the rendered ones are not), and the upgrade's changes carry their
/// categories in the API server's audit log and in `dx_admission_changes_total`.
pub async fn plan_before_helm_upgrade_predicts_exactly_what_rolls(env: &mut Env) {
    let env: &Env = env;
    // The upgrade moves DX Core to a new image: a backup first, as the gate asks.
    crate::backup::run_backup(env, "core");
    let chart = chart_path(env);
    let (ok, manifests, err) =
        chart::helm(env, &["template", RELEASE, &chart, "--namespace", NAMESPACE, "--set", UPGRADE]);
    assert!(ok, "{err}");
    let (code, text) = plan(env, &manifests, "text");
    println!("e2e: dx-admission plan before helm upgrade of the DX example:\n{text}");
    assert_eq!(code, 0, "{text}");
    let (_, json) = plan(env, &manifests, "json");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let changed: Vec<String> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["change"] != "unchanged" || o["rolls"] == true)
        .map(|o| format!("{} {} {} {} {}", o["kind"], o["name"], o["change"], o["categories"], o["roll_reasons"]))
        .collect();
    assert_eq!(
        changed,
        [
            r#""ConfigMap" "dx-global-config" "changed" ["C"] []"#,
            r#""ConfigMap" "dx-ring-api-config" "changed" ["C"] []"#,
            r#""StatefulSet" "dx-core" "changed" ["A"] ["its pod template changes"]"#,
            r#""StatefulSet" "dx-dam" "unchanged" [] ["ConfigMap dx-global-config changes"]"#,
            r#""Deployment" "dx-ring-api" "unchanged" [] ["ConfigMap dx-ring-api-config changes"]"#,
        ],
        "every other object of the release is unchanged: {text}"
    );
    assert_eq!(report["objects"].as_array().unwrap().len(), 13, "{text}");
    let core = report["objects"].as_array().unwrap().iter().find(|o| o["name"] == "dx-core").unwrap();
    assert_eq!((core["backup_needed"].as_bool(), core["backup"]["state"].as_str()), (Some(true), Some("found")));
    assert_eq!(core["backup"]["name"], "Job dx-release/dx-core-backup-e2e");
    let age = core["backup"]["age_seconds"].as_i64().unwrap();
    assert!((0..300).contains(&age), "the backup completed moments ago, not {age}s");
    assert_eq!(report["categories"], serde_json::json!({"A": 1, "C": 2, "P": 0, "N": 0, "R": 0}));
    let predicted: Vec<String> =
        report["rolls"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_owned()).collect();
    assert_eq!(
        predicted,
        ["StatefulSet dx-release/dx-core", "StatefulSet dx-release/dx-dam", "Deployment dx-release/dx-ring-api"]
    );

    // The Helm plugin prints the same plan.
    let (ok, out, err) = chart::helm(env, &["plugin", "install", "charts/plugins/dx-plan"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = chart::helm(env, &["dx-plan", RELEASE, &chart, "--namespace", NAMESPACE, "--set", UPGRADE]);
    assert!(ok, "{err}");
    // The backup's age moves between the two runs; every other line is the same.
    let without_age = |text: &str| text.lines().filter(|l| !l.contains("newest backup")).collect::<Vec<_>>().join("\n");
    assert_eq!(without_age(&out), without_age(&text), "helm dx-plan and the pipe agree");

    let core_a = "dx_admission_changes_total{component=\"core\",category=\"A\"}";
    let global_c = "dx_admission_changes_total{component=\"global\",category=\"C\"}";
    let (core_before, global_before) = (fleet_sum(env, core_a).await, fleet_sum(env, global_c).await);

    let rolled = roll(env, NAMESPACE, 3, |env| {
        let (ok, out, err) =
            chart::helm(env, &["upgrade", RELEASE, &chart, "--namespace", NAMESPACE, "--set", UPGRADE]);
        assert!(ok, "{out}{err}");
    })
    .await;
    rolled.report("helm upgrade planned by dx-admission plan");
    assert_eq!(rolled.counts(), ["deployment/dx-ring-api: 1", "statefulset/dx-core: 1", "statefulset/dx-dam: 1"]);
    let mut actual: Vec<String> = rolled
        .new_replica_sets
        .keys()
        .map(|d| format!("Deployment {NAMESPACE}/{d}"))
        .chain(rolled.new_revisions.keys().map(|s| format!("StatefulSet {NAMESPACE}/{s}")))
        .collect();
    actual.sort();
    let mut expected = predicted.clone();
    expected.sort();
    assert_eq!(actual, expected, "the plan named exactly the workloads that rolled");

    assert_eq!(fleet_sum(env, core_a).await - core_before, 1.0, "the core image change, counted once");
    assert_eq!(fleet_sum(env, global_c).await - global_before, 1.0, "the global ConfigMap change, counted once");
    let audited = |resource: &'static str, name: &'static str, wanted: (&'static str, &'static str)| async move {
        crate::common::eventually(Duration::from_secs(10), || async {
            audited_categories(env, resource, name).last() == Some(&(wanted.0.to_owned(), wanted.1.to_owned()))
        })
        .await
    };
    assert!(
        audited("statefulsets", "dx-core", ("validate.dx-admission.hcl.com/update-category", "A")).await,
        "{:?}",
        audited_categories(env, "statefulsets", "dx-core")
    );
    assert!(
        audited("configmaps", "dx-global-config", ("validate.dx-admission.hcl.com/update-category", "C")).await,
        "{:?}",
        audited_categories(env, "configmaps", "dx-global-config")
    );
    // DAM's manifest did not change: the rollout controller re-stamped it, a C of its own.
    assert!(
        audited("statefulsets", "dx-dam", ("validate.dx-admission.hcl.com/update-category", "C")).await,
        "{:?}",
        audited_categories(env, "statefulsets", "dx-dam")
    );
    // After the upgrade the plan of the same manifests has nothing left to do.
    let (code, after) = plan(env, &manifests, "text");
    assert_eq!(code, 0);
    assert!(
        after.ends_with(
            "A application changes:         0\n\
             C configuration changes:       0\n\
             P persistence schema changes:  0\n\
             N new applications:            0\n\
             R removals:                    0\n\
             Pods roll in 0 workloads\n\
             Verdict: the update would be admitted\n"
        ),
        "{after}"
    );
}

/// A Secret a DX workload uses is a configuration change (C) of the workload's component. No
/// webhook reviews Secret updates: the Lease holder counts it as its watch sees it, and logs it
/// (naming the Secret, never a value).
pub async fn a_secret_change_counts_as_c_of_the_component_using_it(env: &mut Env) {
    let env: &Env = env;
    let (ok, _, err) = env.kubectl(&[
        "create",
        "secret",
        "generic",
        "dx-content-composer-token",
        "-n",
        NAMESPACE,
        "--from-literal=token=first-value",
    ]);
    assert!(ok, "{err}");
    let rolled = roll(env, NAMESPACE, 1, |env| {
        let from = "--from=secret/dx-content-composer-token";
        let (ok, _, err) = env.kubectl(&["set", "env", "deployment/dx-content-composer", "-n", NAMESPACE, from]);
        assert!(ok, "{err}");
    })
    .await;
    assert_eq!(rolled.counts(), ["deployment/dx-content-composer: 1"]);
    let series = "dx_admission_changes_total{component=\"content-composer\",category=\"C\"}";
    let before = fleet_sum(env, series).await;
    let rolled = roll(env, NAMESPACE, 1, |env| {
        let patch = r#"{"stringData": {"token": "second-value"}}"#;
        let (ok, _, err) = env.kubectl(&["patch", "secret", "dx-content-composer-token", "-n", NAMESPACE, "-p", patch]);
        assert!(ok, "{err}");
    })
    .await;
    assert_eq!(rolled.counts(), ["deployment/dx-content-composer: 1"]);
    assert_eq!(
        fleet_sum(env, series).await - before,
        2.0,
        "the Secret change (counted by the Lease holder) and the controller's re-stamp (admitted)"
    );
    let holder = crate::replicas::lease_holder(env);
    let fleet = env.fleet.as_ref().expect("the chart's replicas");
    let logged: Vec<serde_json::Value> = fleet.replicas[&holder]
        .logs
        .try_iter()
        .filter(|line| line["message"] == "a Secret DX workloads use changed")
        .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    let line = &logged[0];
    assert_eq!(
        (line["namespace"].as_str(), line["source"].as_str(), line["components"].as_str()),
        (Some(NAMESPACE), Some("Secret dx-content-composer-token"), Some("content-composer"))
    );
}
