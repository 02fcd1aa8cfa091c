//! The state of a DX deployment, through the real API server and the chart's replicas: the Lease
//! holder's background evaluation written as PolicyReports (an object the webhook never saw, a
//! schema change, no churn, clean-up), stale config of an opted-out workload, a StatefulSet
//! rollout stuck on a pod that never turns Ready, and `report --cluster` saying all of it.

use std::time::Duration;

use serde_json::Value;

use crate::common::eventually;
use crate::replicas::{RELEASE, fleet_schemas, lease_holder};
use crate::workloads::{patch_config_map, wait_until_rolled_out};
use crate::{Env, in_namespace};

const NAMESPACE: &str = "dx-state";
const BROKEN: &str = "examples/broken/ring-api-unpinned-no-probe.yaml";
const WAIT: Duration = Duration::from_secs(60);

/// The namespace's PolicyReport `dx-admission`, if there is one.
fn policy_report(env: &Env) -> Option<Value> {
    let (ok, out, _) = env.kubectl(&["get", "policyreport", "dx-admission", "-n", NAMESPACE, "-o", "json"]);
    ok.then(|| serde_json::from_str(&out).unwrap())
}

/// `result: message` of one object's result for one rule in the namespace's report.
fn result_of(report: &Value, name: &str, rule: &str) -> Option<String> {
    let results = report["results"].as_array()?;
    let found = results.iter().find(|r| r["resources"][0]["name"] == name && r["rule"] == rule)?;
    Some(format!("{}: {}", found["result"].as_str()?, found["message"].as_str()?))
}

async fn wait_for_result(env: &Env, name: &str, rule: &str, expected: &str) -> Value {
    let found = eventually(WAIT, || {
        let report = policy_report(env);
        async move { report.and_then(|r| result_of(&r, name, rule)).as_deref() == Some(expected) }
    })
    .await;
    let report = policy_report(env);
    assert!(found, "{name} {rule}: {expected:?} within {WAIT:?}; report: {report:#?}");
    report.unwrap()
}

/// The Lease holder's "existing DX objects judged" lines seen from now on, until `count` came.
async fn scans(env: &Env, count: usize) {
    let holder = lease_holder(env);
    let fleet = env.fleet.as_ref().expect("the chart's replicas");
    let logs = &fleet.replicas[&holder].logs;
    logs.try_iter().count();
    let mut seen = 0;
    let done = eventually(WAIT, || {
        seen += logs.try_iter().filter(|l| l["message"] == "existing DX objects judged").count();
        let enough = seen >= count;
        async move { enough }
    })
    .await;
    assert!(done, "{count} scans by {holder} within {WAIT:?}, saw {seen}");
}

/// The values of a metric on the Lease holder and on the other replica.
async fn on_each_replica(env: &Env, series: &str) -> (Vec<f64>, Vec<f64>) {
    let holder = lease_holder(env);
    let fleet = env.fleet.as_ref().expect("the chart's replicas");
    let other = fleet.replicas.keys().find(|identity| **identity != holder).expect("two replicas").clone();
    (fleet.values(&holder, series).await, fleet.values(&other, series).await)
}

fn report_command(env: &Env, args: &[&str]) -> (i32, String, String) {
    let kubeconfig = env.cluster.kubeconfig.to_str().unwrap().to_owned();
    let mut all = vec!["report", "--cluster", "--kubeconfig", &kubeconfig];
    all.extend(args);
    crate::common::binary::command(&all, "")
}

/// A DX Deployment created while no validating webhook was registered is judged by the next
/// scan: its PolicyReport names the two rules it breaks, the Lease holder alone exports the
/// finding, a quiet cluster rewrites nothing, and the results turn to pass once it is fixed;
/// deleting it deletes the namespace's report.
pub async fn an_object_the_webhook_never_saw_is_reported_until_fixed_or_deleted(env: &mut Env) {
    let (ok, _, err) = env.kubectl(&["create", "namespace", NAMESPACE]);
    assert!(ok, "{err}");
    let broken = in_namespace(BROKEN, NAMESPACE);
    let (ok, saved, err) = env.kubectl(&["get", "validatingwebhookconfiguration", RELEASE, "-o", "json"]);
    assert!(ok, "{err}");
    let mut saved: Value = serde_json::from_str(&saved).unwrap();
    for field in ["resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"] {
        saved["metadata"].as_object_mut().unwrap().remove(field);
    }
    let (ok, _, err) = env.kubectl(&["delete", "validatingwebhookconfiguration", RELEASE]);
    assert!(ok, "{err}");
    let unguarded = eventually(WAIT, || {
        let (ok, _, _) = env.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &broken);
        async move { ok }
    });
    assert!(unguarded.await, "the API server stops calling the deleted webhook");
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &broken);
    assert!(ok, "{err}");
    let (ok, _, err) = env.kubectl_stdin(&["create", "-f", "-"], &saved.to_string());
    assert!(ok, "{err}");
    // A create of another such object (an apply of the stored one would send no change at all).
    let probe = broken.replace("name: dx-ring-api-unpinned\n", "name: dx-ring-api-probe\n");
    let guarded = eventually(WAIT, || {
        let (ok, _, _) = env.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &probe);
        async move { !ok }
    });
    assert!(guarded.await, "the webhook is back: the same apply is refused now");

    let report = wait_for_result(
        env,
        "dx-ring-api-unpinned",
        "image-pinned",
        r#"fail: spec.template.spec.containers[0].image: image "hcl/dx/ring-api:latest" uses the moving tag latest [image-pinned]"#,
    )
    .await;
    assert_eq!(
        result_of(&report, "dx-ring-api-unpinned", "readiness-probe").as_deref(),
        Some(
            r#"fail: spec.template.spec.containers[0].readinessProbe: container "ring-api" has no readiness probe [readiness-probe]"#
        )
    );
    assert_eq!(
        result_of(&report, "dx-ring-api-unpinned", "schema").as_deref(),
        Some("pass: The object matches its versioned DX schema")
    );
    assert_eq!(report["summary"], serde_json::json!({"pass": 11, "fail": 2, "warn": 0, "error": 0, "skip": 0}));
    assert_eq!(report["metadata"]["labels"]["app.kubernetes.io/managed-by"], "dx-admission");
    let failed = report["results"].as_array().unwrap().iter().find(|r| r["rule"] == "image-pinned").unwrap();
    assert_eq!(
        (failed["source"].as_str(), failed["severity"].as_str(), failed["resources"][0]["kind"].as_str()),
        (Some("dx-admission"), Some("high"), Some("Deployment"))
    );
    let series =
        format!(r#"dx_admission_existing_findings{{namespace="{NAMESPACE}",rule="image-pinned",severity="deny"}}"#);
    let (holder, other) = on_each_replica(env, &series).await;
    assert_eq!((holder, other), (vec![1.0], vec![]), "exported by the Lease holder alone");

    // Two more scans of an unchanged cluster write nothing.
    let version = report["metadata"]["resourceVersion"].clone();
    scans(env, 2).await;
    assert_eq!(policy_report(env).unwrap()["metadata"]["resourceVersion"], version, "no churn");

    // Fixed through the webhook: both results pass.
    let patch = r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"hcl/dx/ring-api:95_CF225"},
        {"op":"add","path":"/spec/template/spec/containers/0/readinessProbe","value":{"httpGet":{"path":"/health","port":3000}}}]"#;
    let (ok, _, err) =
        env.kubectl(&["patch", "deployment", "dx-ring-api-unpinned", "-n", NAMESPACE, "--type=json", "-p", patch]);
    assert!(ok, "{err}");
    let report = wait_for_result(
        env,
        "dx-ring-api-unpinned",
        "image-pinned",
        "pass: Images are pinned to a release tag or a digest",
    )
    .await;
    assert_eq!(report["summary"]["fail"], 0, "{report:#}");
    let (holder, _) = on_each_replica(env, &series).await;
    assert_eq!(holder, Vec::<f64>::new(), "no object of {NAMESPACE} breaks image-pinned any more");

    let (ok, _, err) = env.kubectl(&["delete", "deployment", "dx-ring-api-unpinned", "-n", NAMESPACE]);
    assert!(ok, "{err}");
    let gone = eventually(WAIT, || {
        let report = policy_report(env);
        async move { report.is_none() }
    });
    assert!(gone.await, "the report of a namespace without DX objects is deleted");
}

/// A schema update the DX team ships flips a result of an object nobody touched, and back.
pub async fn a_schema_change_flips_the_result_of_an_existing_object(env: &mut Env) {
    let (ok, _, err) =
        env.kubectl_stdin(&["apply", "-f", "-"], &in_namespace("examples/valid/configmaps.yaml", NAMESPACE));
    assert!(ok, "{err}");
    wait_for_result(env, "dx-ring-api-config", "schema", "pass: The object matches its versioned DX schema").await;
    let file = fleet_schemas(env).join("v2/configmap/ring-api.json");
    let original = std::fs::read_to_string(&file).unwrap();
    let mut schema: Value = serde_json::from_str(&original).unwrap();
    schema["properties"]["cache.size"] =
        serde_json::json!({"type": "string", "description": "Entries RingAPI caches."});
    schema["required"].as_array_mut().unwrap().push("cache.size".into());
    std::fs::write(&file, serde_json::to_string_pretty(&schema).unwrap()).unwrap();
    wait_for_result(env, "dx-ring-api-config", "schema", "fail: data[cache.size]: is required but missing [schema]")
        .await;
    std::fs::write(&file, original).unwrap();
    wait_for_result(env, "dx-ring-api-config", "schema", "pass: The object matches its versioned DX schema").await;
}

/// A workload opted out of rollouts keeps running the old content of its ConfigMap: the metric
/// and `report --cluster` say its config is stale, while its pods all run the current template.
pub async fn an_opted_out_workload_shows_stale_config_after_its_config_map_changes(env: &mut Env) {
    let deployment = in_namespace("examples/valid/ring-api.yaml", NAMESPACE).replacen(
        "metadata:\n  name: dx-ring-api\n",
        "metadata:\n  name: dx-ring-api\n  annotations:\n    dx.hcl.com/auto-rollout: \"false\"\n",
        1,
    );
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &deployment);
    assert!(ok, "{err}");
    let rolled_out = wait_until_rolled_out(env, NAMESPACE, WAIT).await;
    assert_eq!(rolled_out.pods.iter().filter(|p| p.ready).count(), 2, "{:?}", rolled_out.pods);
    let stale = format!(r#"dx_admission_workloads_stale_config{{namespace="{NAMESPACE}"}}"#);
    let current = eventually(WAIT, || {
        let env = &*env;
        let stale = stale.clone();
        async move { on_each_replica(env, &stale).await.0 == [0.0] }
    });
    assert!(current.await, "the Lease holder counts no workload on stale config before the change");
    // Times have whole seconds: the change must come in a later second than the pods' start.
    let started = pod_start(env);
    let later = eventually(WAIT, || {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        async move { now > started }
    });
    assert!(later.await);
    patch_config_map(env, NAMESPACE, "dx-ring-api-config", r#"{"log.level":"warn"}"#);
    let became_stale = eventually(WAIT, || {
        let env = &*env;
        let stale = stale.clone();
        async move { on_each_replica(env, &stale).await.0 == [1.0] }
    });
    assert!(became_stale.await, "the Lease holder counts one workload on stale config in {NAMESPACE}");
    let old =
        format!(r#"dx_admission_pods_on_old_config{{namespace="{NAMESPACE}",workload="deployment/dx-ring-api"}}"#);
    assert_eq!(on_each_replica(env, &old).await.0, [0.0], "its pods run its current template");

    let (code, out, err) = report_command(env, &["-n", NAMESPACE, "-o", "json"]);
    assert_eq!(code, 1, "{out}{err}");
    let json: Value = serde_json::from_str(&out).unwrap();
    let ring = json["workloads"].as_array().unwrap().iter().find(|w| w["name"] == "dx-ring-api").unwrap().clone();
    let because = ring["staleBecause"].as_str().unwrap();
    assert!(
        because.starts_with("ConfigMap dx-ring-api-config changed ")
            && because.ends_with(" after the oldest pod started"),
        "{because}"
    );
    assert_eq!(
        (ring["config"].as_str(), ring["pods"].as_u64(), ring["podsOnOldConfig"].as_u64(), ring["rollout"].as_str()),
        (Some("stale"), Some(2), Some(0), Some("complete"))
    );
}

/// The newest start time of the namespace's pods, in Unix seconds.
fn pod_start(env: &Env) -> i64 {
    let (ok, out, err) = env.kubectl(&["get", "pods", "-n", NAMESPACE, "-o", "jsonpath={.items[*].status.startTime}"]);
    assert!(ok, "{err}");
    out.split_whitespace().map(|t| t.parse::<k8s_openapi::jiff::Timestamp>().unwrap().as_second()).max().unwrap()
}

/// DX Core's new pod never turns Ready (its template now asks for a node no one has): the
/// OrderedReady StatefulSet waits, the metric and `report --cluster` call the rollout stuck.
pub async fn a_statefulset_whose_new_pod_never_turns_ready_is_reported_stuck(env: &mut Env) {
    for file in ["examples/valid/claims.yaml", "examples/valid/core.yaml"] {
        let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &in_namespace(file, NAMESPACE));
        assert!(ok, "{file}: {err}");
    }
    wait_until_rolled_out(env, NAMESPACE, WAIT).await;
    let patch = r#"{"spec":{"template":{"spec":{"nodeSelector":{"e2e.dx.hcl.com/no-such-node":"true"}}}}}"#;
    let (ok, _, err) = env.kubectl(&["patch", "statefulset", "dx-core", "-n", NAMESPACE, "--type=merge", "-p", patch]);
    assert!(ok, "{err}");
    let series = format!(r#"dx_admission_rollout_stuck{{namespace="{NAMESPACE}",workload="statefulset/dx-core"}}"#);
    let stuck = eventually(WAIT, || {
        let env = &*env;
        let series = series.clone();
        async move { on_each_replica(env, &series).await.0 == [1.0] }
    });
    assert!(stuck.await, "the Lease holder calls the rollout stuck after rollout.stuckAfter (5s)");
    let old = format!(r#"dx_admission_pods_on_old_config{{namespace="{NAMESPACE}",workload="statefulset/dx-core"}}"#);
    assert_eq!(on_each_replica(env, &old).await, (vec![1.0], vec![]), "dx-core-0 waits on the old revision");

    let (code, out, err) = report_command(env, &["-n", NAMESPACE, "--rollout-stuck-after", "5s"]);
    assert_eq!(code, 1, "{out}{err}");
    println!("e2e: report --cluster -n {NAMESPACE}:\n{out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with(NAMESPACE)).collect();
    let core = rows.iter().find(|l| l.split_whitespace().nth(1) == Some("core")).expect("a row for core");
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>(),
        [NAMESPACE, "core", "95.225.0", "v2", "none", "current", "1/2", "stuck"]
    );
    let stuck_line = out.lines().skip_while(|l| *l != "Stuck rollouts:").nth(1).unwrap_or_default();
    assert!(stuck_line.starts_with("  StatefulSet dx-state/dx-core: updated pod dx-core-1 not Ready for "), "{out}");
    assert!(
        out.ends_with("Needs attention: 0 of 9 DX objects denied, 1 workload on stale config, 1 rollout stuck\n"),
        "{out}"
    );
}

/// `report --cluster --schema-version` on the DX example release: what the candidate v3 would
/// deny of what runs, before it becomes the default.
pub async fn report_tries_a_candidate_schema_version_on_what_runs(env: &mut Env) {
    let dir = env.cluster.dir.path().join("candidate-schemas");
    crate::common::candidate_schemas(&dir);
    let schemas = dir.to_str().unwrap();
    let (code, out, err) = report_command(env, &["-n", "dx-release", "--schema-version", "v3", "--schemas", schemas]);
    assert_eq!((code, err.as_str()), (1, ""), "{out}");
    println!("e2e: report --cluster -n dx-release --schema-version v3:\n{out}");
    assert!(
        out.starts_with("DX deployment in the cluster (namespace dx-release), judged under candidate schema v3\n"),
        "{out}"
    );
    let findings: Vec<&str> =
        out.lines().skip_while(|l| *l != "Findings:").skip(1).take_while(|l| !l.is_empty()).collect();
    assert_eq!(
        findings,
        [
            "  ConfigMap dx-release/dx-global-config: deny data[dx.region]: is required but missing [schema] fix: see schemas/v3/configmap/global.json"
        ]
    );
    let (_, out, _) = report_command(env, &["-n", "dx-release", "--schemas", schemas]);
    assert!(!out.contains("Findings:"), "v2, the default, denies nothing that runs: {out}");
}
