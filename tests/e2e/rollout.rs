//! Config checksums end to end: the webhook stamps workloads, the controller re-stamps them when
//! a ConfigMap or Secret changes in the cluster, the delete guard, and leadership.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use dx_admission::checksum::annotations::AGGREGATE;
use serde_json::Value;

use crate::common::{TestServer, eventually, holds_for, http_get, load, repo, review, yaml_from_str};
use crate::relay::Relay;
use crate::{Env, cluster_mode};

const NS: &str = "e2e-roll";
/// How long "nothing more happens" is watched for: four times the suite's 500 ms debounce, and
/// longer than the controller takes to re-stamp after a change here (about 1 s, printed above).
pub const NOTHING_MORE: Duration = Duration::from_secs(2);
/// The phases of the outage scenario, as indices of its counts.
const OPEN: usize = 0;
const STALLED: usize = 1;
const REFUSING: usize = 2;
const HEALED: usize = 3;
const PHASES: usize = 4;

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
    let expected = log_level_checksum(level);
    eventually(Duration::from_secs(15), || async { app_checksum(env) == expected }).await
}

/// The per-source annotation value of a ConfigMap whose only key the pod reads is `log.level`:
/// known answers from the documented scheme (docs/annotations.md), not computed by this code.
fn log_level_checksum(level: &str) -> &'static str {
    match level {
        "info" => "sha256:e9196a7a818625e53ca4aeedef00cf75754dce27cb17f657db156512c979e92b",
        "debug" => "sha256:baee79dd285e23d8b0df06c979b89abda4e4380499df8aa3f02fa5b47008b46f",
        "error" => "sha256:e7986cb92ff3b3c539bbd59e303e5b4ea6b7ef64fb87482f07dc8fd1503de841",
        "warn" => "sha256:b75af026980086bc96846bb55e0e27d5348351d5862e2403d1bd357d1113a260",
        other => panic!("no known answer for log.level {other}"),
    }
}

/// The example RingAPI Deployment in the test namespace, reading the Secret `db`'s password and,
/// whole (envFrom), `app-config` and the source `second` names (YAML after `name: `).
fn ring_api(second: &str) -> String {
    std::fs::read_to_string(repo().join("examples/valid/ring-api.yaml"))
        .unwrap()
        .replace("namespace: dx", &format!("namespace: {NS}"))
        .replace("name: dx-ring-api-config", "name: app-config")
        .replace("name: dx-global-config", &format!("name: {second}"))
        .replace(
            "        envFrom:\n",
            "        env:\n        - name: DB_PASSWORD\n          valueFrom:\n            secretKeyRef:\n              name: db\n              key: password\n        envFrom:\n",
        )
}

/// The Deployment reading a ConfigMap, an optional one, and a Secret key; plus an unrelated
/// ConfigMap.
fn manifests(app_config: &str) -> String {
    let deployment = ring_api("other-config\n            optional: true");
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
    assert_eq!(app_checksum(env), log_level_checksum("info"));
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
    // An unrelated ConfigMap changes, then the referenced one, as `kubectl edit` would. The
    // watch delivers them in order, so once the second has rolled the Deployment the first was
    // seen too: exactly one rollout means the unrelated change rolled nothing.
    let (ok, _, err) =
        env.kubectl(&["patch", "configmap", "unrelated", "-n", NS, "--type=merge", "-p", r#"{"data":{"a":"2"}}"#]);
    assert!(ok, "{err}");
    let started = Instant::now();
    assert!(set_log_level_and_wait(env, "debug").await, "the controller re-stamps the Deployment");
    println!("e2e: ConfigMap change -> Deployment re-stamped in {:.1}s", started.elapsed().as_secs_f64());
    assert_ne!(template_annotation(env, NS, "deployment", "dx-ring-api", AGGREGATE), aggregate);
    assert_eq!(generation(env, NS, "deployment", "dx-ring-api"), before + 1, "no rollout for the unrelated change");
    let once = holds_for(NOTHING_MORE, || async { generation(env, NS, "deployment", "dx-ring-api") == before + 1 });
    assert!(once.await, "one rollout for one change: no second one within {NOTHING_MORE:?}");
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

/// A ValidatingAdmissionPolicy of the API server that refuses every UPDATE of the test's
/// Deployment, and its binding: the controller's re-stamps fail while both exist.
fn freeze_policy() -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {{name: e2e-freeze}}\n\
         spec:\n  failurePolicy: Fail\n  matchConstraints:\n    resourceRules:\n\
         \x20   - {{apiGroups: [apps], apiVersions: [v1], operations: [UPDATE], resources: [deployments]}}\n\
         \x20 matchConditions:\n  - {{name: ring-api-only, expression: \"object.metadata.name == 'dx-ring-api' && object.metadata.namespace == '{NS}'\"}}\n\
         \x20 validations:\n  - {{expression: 'false', message: frozen by the e2e fault}}\n---\n\
         apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {{name: e2e-freeze}}\n\
         spec: {{policyName: e2e-freeze, validationActions: [Deny]}}\n"
    )
}

pub async fn a_failed_re_stamp_is_retried_until_the_workload_carries_the_change(env: &mut Env) {
    let (ok, out, err) = env.kubectl_stdin(&["apply", "-f", "-"], &freeze_policy());
    assert!(ok, "{out}{err}");
    // The API server enforces a new policy once its informers have it: wait until it refuses.
    let frozen = eventually(Duration::from_secs(20), || async {
        let (ok, _, err) = env.kubectl(&[
            "patch",
            "deployment",
            "dx-ring-api",
            "-n",
            NS,
            "--dry-run=server",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"e2e-probe":"1"}}}"#,
        ]);
        !ok && err.contains("frozen by the e2e fault")
    })
    .await;
    assert!(frozen, "the policy refuses updates of the Deployment");
    let (failed, succeeded) =
        ("dx_admission_rollouts_total{result=\"failed\"}", "dx_admission_rollouts_total{result=\"ok\"}");
    let (failed_before, ok_before) = (env.webhook().metric(failed).await, env.webhook().metric(succeeded).await);
    let generation_before = generation(env, NS, "deployment", "dx-ring-api");

    // The change arrives during the fault: every re-stamp is refused, and retried.
    let patch = r#"{"data":{"log.level":"error"}}"#;
    let (ok, _, err) = env.kubectl(&["patch", "configmap", "app-config", "-n", NS, "--type=merge", "-p", patch]);
    assert!(ok, "{err}");
    let retried =
        eventually(Duration::from_secs(20), || async { env.webhook().metric(failed).await >= failed_before + 3.0 })
            .await;
    assert!(retried, "three refused re-stamps are counted (first try and two retries)");
    assert_eq!(generation(env, NS, "deployment", "dx-ring-api"), generation_before, "nothing got through");
    assert_eq!(env.webhook().metric(succeeded).await, ok_before);

    // The fault clears; nothing else changes, and the next retry stamps the change.
    let (ok, _, err) = env.kubectl(&["delete", "validatingadmissionpolicybinding", "e2e-freeze"]);
    assert!(ok, "{err}");
    let cleared = Instant::now();
    let expected = log_level_checksum("error");
    let stamped = eventually(Duration::from_secs(70), || async { app_checksum(env) == expected }).await;
    assert!(stamped, "the change made during the fault is stamped once the fault clears");
    println!(
        "e2e: re-stamp refused {} times, stamped {:.1}s after the fault cleared",
        env.webhook().metric(failed).await - failed_before,
        cleared.elapsed().as_secs_f64()
    );
    assert_eq!(generation(env, NS, "deployment", "dx-ring-api"), generation_before + 1, "one rollout");
    assert_eq!(env.webhook().metric(succeeded).await, ok_before + 1.0, "the success is counted once");
    let (ok, _, err) = env.kubectl(&["delete", "validatingadmissionpolicy", "e2e-freeze"]);
    assert!(ok, "{err}");
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
    let replica_b_ops = replica_b.ops_addr;
    let synced = eventually(Duration::from_secs(10), || async { http_get(replica_b_ops, "/readyz").await.0 == 200 });
    assert!(synced.await, "replica-b lists the cluster");
    let follows = holds_for(NOTHING_MORE, || async {
        lease_holder(env) == "replica-a" && generation(env, NS, "deployment", "dx-ring-api") == before
    });
    assert!(follows.await, "within {NOTHING_MORE:?} of its start, replica-b neither leads nor patches");
    // Replica A stops cleanly; the webhook configurations now point at B, which takes the Lease.
    let ca = replica_b.pki.ca_pem.clone();
    let replica_a = env.webhook.replace(replica_b).expect("replica a");
    env.register(&ca);
    if let Some(server) = replica_a.server {
        server.shutdown().await;
    }
    let moved = eventually(Duration::from_secs(10), || async { lease_holder(env) == "replica-b" }).await;
    assert!(moved, "leadership moves to replica-b once replica-a releases it");
    let untouched = holds_for(NOTHING_MORE, || async { generation(env, NS, "deployment", "dx-ring-api") == before });
    assert!(untouched.await, "a new leader patches nothing within {NOTHING_MORE:?} of taking the Lease");
    // The new leader rolls on the next change.
    assert!(set_log_level_and_wait(env, "warn").await, "replica-b's controller re-stamps");
}

/// The second envFrom source of the load's workload: app-config again, so every source it
/// reads is cached.
const CACHED_ONLY: &str = "app-config";

/// The checksum annotations a mutate answer adds to a template that carries none.
async fn stamped_by(target: &load::Target, request: &load::Request) -> serde_json::Map<String, Value> {
    let body = load::answer(target, request).await.expect("a correct answer");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let patch = answer["response"]["patch"].as_str().unwrap_or_else(|| panic!("no patch in {answer}"));
    let patch: Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(patch).unwrap()).unwrap();
    assert_eq!(patch[0]["path"], "/spec/template/metadata/annotations", "{patch}");
    patch[0]["value"].as_object().unwrap().clone()
}

pub async fn with_the_api_server_unreachable_reviews_are_answered_from_the_cache(env: &mut Env) {
    // Replica C reaches the API server through a relay the test breaks; the API server still
    // reaches C.
    let kubeconfig = std::fs::read_to_string(&env.cluster.kubeconfig).unwrap();
    let server = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: https://")).unwrap().to_owned();
    let relay = Arc::new(Relay::start(server.parse().unwrap()).await);
    env.relay = Some(Arc::clone(&relay));
    // Whatever happens below, the scenarios after this one find C's relay open.
    let _heal = Heal(&relay);
    let relayed = env.cluster.dir.path().join("kubeconfig-relayed");
    std::fs::write(&relayed, kubeconfig.replace(&server, &relay.addr.to_string())).unwrap();
    let replica_c =
        TestServer::start_with(move |config| config.cluster = Some(cluster_mode(&relayed, "replica-c"))).await;
    let ready = eventually(Duration::from_secs(15), || async { replica_c.ops("/readyz").await.0 == 200 }).await;
    assert!(ready, "replica-c lists the cluster through the relay");
    let ca = replica_c.pki.ca_pem.clone();
    let replica_b = env.webhook.replace(replica_c).expect("replica b");
    env.register(&ca);
    // The API server reads webhook configurations asynchronously: dry-run a change until it calls C.
    let current = ring_api("other-config\n            optional: true").replace("replicas: 2", "replicas: 3");
    let called = eventually(Duration::from_secs(15), || async {
        let _ = env.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &current);
        env.webhook().metric("dx_admission_reviews_total{endpoint=\"mutate\"").await > 0.0
    })
    .await;
    assert!(called, "the API server calls replica-c");
    if let Some(server) = replica_b.server {
        server.shutdown().await;
    }
    let led = eventually(Duration::from_secs(10), || async { lease_holder(env) == "replica-c" }).await;
    assert!(led, "replica-c takes the Lease");

    // The load goes through the API server the whole time, as users' requests do: server-side
    // dry runs of the workload (mutate and validate by C) and of a broken one (denied by C), and
    // real applies of a DX ConfigMap (validated by C), counted per phase. C's /readyz is sampled
    // throughout.
    let webhook = env.webhook();
    let target = load::Target::new(webhook.tls_addr, &webhook.pki.ca_pem);
    let phase = Arc::new(AtomicUsize::new(OPEN));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let load = {
        let (phase, stop, progress) = (Arc::clone(&phase), Arc::clone(&stop), Arc::clone(&progress));
        let (kubectl, kubeconfig) = (env.cluster.bins.kubectl.clone(), env.cluster.kubeconfig.clone());
        let workload = ring_api(CACHED_ONLY).replace("replicas: 2", "replicas: 3");
        let broken = std::fs::read_to_string(repo().join("examples/broken/ring-api-unpinned-no-probe.yaml"))
            .unwrap()
            .replace("namespace: dx", &format!("namespace: {NS}"));
        std::thread::spawn(move || {
            let (mut answered, mut failures) = ([0usize; PHASES], Vec::new());
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                round += 1;
                let during = phase.load(Ordering::SeqCst);
                let config = format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dx-ring-api-config\n  namespace: {NS}\n  labels:\n    \
                     app.kubernetes.io/part-of: dx\n    app.kubernetes.io/component: ring-api\n\
                     data:\n  log.level: info\n  core.url: http://dx-core:10039/wps\n  request.timeout: {}s\n",
                    round % 50 + 1
                );
                let kubectl = |args: &[&str], stdin: &str| {
                    let output = crate::cluster::run_kubectl(&kubectl, &kubeconfig, args, Some(stdin));
                    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
                };
                let checks = [
                    (kubectl(&["apply", "--dry-run=server", "-f", "-"], &workload), true),
                    (kubectl(&["apply", "--dry-run=server", "-f", "-"], &broken), false),
                    (kubectl(&["apply", "-f", "-"], &config), true),
                ];
                for ((ok, err), expected) in checks {
                    let right = if expected {
                        ok
                    } else {
                        err.contains(&format!("denied the request: Deployment {NS}/dx-ring-api-unpinned rejected"))
                    };
                    if right {
                        answered[during] += 1;
                        progress.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failures.push(format!("phase {during}: {err}"));
                    }
                }
            }
            (answered, failures)
        })
    };
    let sampler = {
        let (phase, stop, ops) = (Arc::clone(&phase), Arc::clone(&stop), webhook.ops_addr);
        tokio::spawn(async move {
            let mut samples = [(0usize, 0usize); PHASES];
            while !stop.load(Ordering::SeqCst) {
                let during = phase.load(Ordering::SeqCst);
                let ready = http_get(ops, "/readyz").await == (200, "ok".into());
                samples[during].0 += 1;
                samples[during].1 += usize::from(ready);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };
    let mutate = load::Request::review(
        "/mutate",
        &review("CREATE", Some(&yaml_from_str(&ring_api(CACHED_ONLY)).remove(0)), None),
        true,
    );
    // A source deleted during the outage, and a workload reading it.
    let doomed =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: doomed, namespace: {NS}}}\ndata: {{a: '1'}}\n");
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &doomed);
    assert!(ok, "{err}");
    let reads_doomed = yaml_from_str(&ring_api("doomed\n            optional: true")).remove(0);
    let reads_doomed = load::Request::review("/mutate", &review("CREATE", Some(&reads_doomed), None), true);
    let doomed_key = "checksum.dx.hcl.com/configmap.doomed";
    let cached = eventually(Duration::from_secs(10), || async {
        stamped_by(&target, &reads_doomed).await.contains_key(doomed_key)
    });
    assert!(cached.await, "replica-c caches the new source");
    let stamped = app_checksum(env);
    let secret = template_annotation(env, NS, "deployment", "dx-ring-api", "checksum.dx.hcl.com/secret.db");
    let read_failures = "dx_admission_config_reads_total{result=\"failed\"}";
    let failed_before = webhook.metric(read_failures).await;
    let leader = "dx_admission_rollout_leader";
    assert_eq!(webhook.metric(leader).await, 1.0, "replica-c leads");
    // Each phase ends only once requests went through the API server in it.
    let load_moves_on = |progress: Arc<AtomicUsize>| async move {
        let mark = progress.load(Ordering::SeqCst);
        let moved = eventually(Duration::from_secs(20), || async { progress.load(Ordering::SeqCst) >= mark + 3 });
        assert!(moved.await, "requests through the API server are answered");
    };
    load_moves_on(Arc::clone(&progress)).await;

    // 1. Stalled: requests to the API server get no answer.
    phase.store(STALLED, Ordering::SeqCst);
    relay.stall();
    assert_eq!(webhook.ops("/readyz").await, (200, "ok".into()), "a replica that listed once stays ready");
    let annotations = stamped_by(&target, &mutate).await;
    assert_eq!(annotations["checksum.dx.hcl.com/configmap.app-config"], stamped.as_str(), "stamped from the cache");
    assert_eq!(annotations["checksum.dx.hcl.com/secret.db"], secret.as_str());
    // A ConfigMap created now, and the Deployment changed to read it: C cannot read it, says so,
    // and admits the change.
    let late = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: late-config, namespace: {NS}}}\ndata: {{feature: 'on'}}\n---\n{}",
        ring_api("late-config")
    );
    let (ok, out, err) = env.kubectl_stdin(&["apply", "-f", "-"], &late);
    assert!(ok, "{err}");
    assert_eq!(out, "configmap/late-config created\ndeployment.apps/dx-ring-api configured\n");
    assert_eq!(
        err,
        "Warning: ConfigMap e2e-roll/late-config not readable from the API server now; the rollout controller \
         stamps its checksum later\n"
    );
    assert_eq!(app_checksum(env), stamped, "the checksums it has are kept");
    let late_checksum =
        || template_annotation(env, NS, "deployment", "dx-ring-api", "checksum.dx.hcl.com/configmap.late-config");
    assert_eq!(late_checksum(), "");
    assert!(webhook.metric(read_failures).await > failed_before, "the failed read is counted");
    // The Lease cannot be renewed: C steps down before the Lease could pass to another replica.
    let stepped_down = eventually(Duration::from_secs(15), || async { webhook.metric(leader).await == 0.0 });
    assert!(stepped_down.await, "a holder that cannot renew its Lease steps down");

    load_moves_on(Arc::clone(&progress)).await;

    // 2. Refusing: every connection to the API server is closed at once. A source is deleted.
    phase.store(REFUSING, Ordering::SeqCst);
    relay.refuse();
    let watch_errors = "dx_admission_watch_errors_total{kind=\"ConfigMap\"}";
    let counted = eventually(Duration::from_secs(10), || async { webhook.metric(watch_errors).await > 0.0 }).await;
    assert!(counted, "the failing watch is counted");
    assert_eq!(webhook.ops("/readyz").await.0, 200);
    let annotations = stamped_by(&target, &mutate).await;
    assert_eq!(annotations["checksum.dx.hcl.com/configmap.app-config"], stamped.as_str());
    let (ok, _, err) = env.kubectl(&["delete", "configmap", "doomed", "-n", NS]);
    assert!(ok, "{err}");

    load_moves_on(Arc::clone(&progress)).await;

    // 3. Healed: the watches resume, the controller stamps what C could not read, the deleted
    // source is gone from the cache, and C leads again.
    phase.store(HEALED, Ordering::SeqCst);
    relay.heal();
    let healed = Instant::now();
    // `feature: on`, the one key (a known answer, as above).
    let expected = "sha256:5cae92cf86994a2169a688c9d09399201bfc2cb79b802ec8d84e5dbab2a0d2e1";
    let caught_up = eventually(Duration::from_secs(40), || async { late_checksum() == expected }).await;
    let caught_up_after = healed.elapsed().as_secs_f64();
    assert!(caught_up, "the source C could not read is stamped once the API server answers");
    let forgotten = eventually(Duration::from_secs(10), || async {
        !stamped_by(&target, &reads_doomed).await.contains_key(doomed_key)
    });
    assert!(forgotten.await, "a source deleted during the outage is not stamped after it");
    assert!(
        eventually(Duration::from_secs(10), || async { webhook.metric(leader).await == 1.0 }).await,
        "C leads again"
    );
    load_moves_on(Arc::clone(&progress)).await;
    stop.store(true, Ordering::SeqCst);
    let (answered, failures) = load.join().unwrap();
    let samples = sampler.await.unwrap();
    println!(
        "e2e: API server unreachable (stalled, then refusing): through the API server {answered:?} answered per phase \
         (open, stalled, refusing, healed), {} failed; /readyz ok in {samples:?} (ok of samples per phase); the unread \
         source stamped {caught_up_after:.1}s after it healed",
        failures.len()
    );
    assert_eq!(failures, Vec::<String>::new(), "requests through the API server failed");
    for (name, (count, (sampled, ready))) in
        ["open", "stalled", "refusing", "healed"].iter().zip(answered.iter().zip(samples))
    {
        assert!(*count > 0, "no request went through the API server while {name}");
        assert!(sampled > 0, "/readyz was not sampled while {name}");
        assert_eq!(ready, sampled, "/readyz was not ok in every sample while {name}");
    }
}

/// Opens a relay when dropped.
struct Heal<'a>(&'a Relay);

impl Drop for Heal<'_> {
    fn drop(&mut self) {
        self.0.heal();
    }
}

/// `dx.hcl.com/auto-rollout`: `"true"` opts a non-DX workload in, `"false"` opts a DX one out;
/// a DX StatefulSet is re-stamped by the controller like a Deployment; a Secret used only through
/// a projected volume is held by the delete guard.
pub async fn auto_rollout_opt_in_and_out_statefulsets_and_projected_secrets(env: &mut Env) {
    let plain = |name: &str, annotation: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {NS}\n{annotation}\
             spec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      \
             containers:\n      - name: app\n        image: example/app:1.0\n        envFrom:\n        - configMapRef: {{name: app-config}}\n"
        )
    };
    let opted_in = plain("opted-in", "  annotations: {dx.hcl.com/auto-rollout: 'true'}\n");
    let not_dx = plain("not-dx", "");
    let opted_out = ring_api(CACHED_ONLY).replace("name: dx-ring-api\n", "name: dx-ring-api-opted-out\n").replacen(
        "  labels:\n",
        "  annotations: {dx.hcl.com/auto-rollout: 'false'}\n  labels:\n",
        1,
    );
    let core = std::fs::read_to_string(repo().join("examples/valid/core.yaml"))
        .unwrap()
        .replace("namespace: dx", &format!("namespace: {NS}"))
        .replace("name: dx-core-config", "name: app-config")
        .replace("name: dx-global-config", "name: app-config");
    let projected = ring_api(CACHED_ONLY)
        .replace("name: dx-ring-api\n", "name: dx-ring-api-projected\n")
        .replace("        env:\n        - name: DB_PASSWORD\n          valueFrom:\n            secretKeyRef:\n              name: db\n              key: password\n", "")
        .replace("      containers:\n", "      volumes:\n      - name: creds\n        projected:\n          sources:\n          - secret: {name: projected-creds}\n      containers:\n");
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: projected-creds, namespace: {NS}}}\nstringData: {{token: t}}\n"
    );
    for manifest in [&opted_in, &not_dx, &opted_out, &core, &secret, &projected] {
        let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(ok, "{err}\n{manifest}");
    }
    let current = log_level_checksum("warn");
    assert_eq!(app_checksum(env), current, "the scenario starts where the last change left app-config");
    let stamp =
        |kind: &str, name: &str| template_annotation(env, NS, kind, name, "checksum.dx.hcl.com/configmap.app-config");
    assert_eq!(stamp("deployment", "opted-in"), current, "a non-DX workload that opts in is stamped");
    assert_eq!(stamp("deployment", "not-dx"), "", "a non-DX workload is not");
    assert_eq!(stamp("deployment", "dx-ring-api-opted-out"), "", "a DX workload that opts out is not");
    assert_eq!(stamp("statefulset", "dx-core"), current);
    assert!(
        template_annotation(
            env,
            NS,
            "deployment",
            "dx-ring-api-projected",
            "checksum.dx.hcl.com/secret.projected-creds"
        )
        .starts_with("hmac-sha256:"),
        "a Secret in a projected volume is stamped"
    );
    // A change in the cluster: the StatefulSet and the opted-in Deployment roll, the others not.
    let out_generation = generation(env, NS, "deployment", "dx-ring-api-opted-out");
    let plain_generation = generation(env, NS, "deployment", "not-dx");
    assert!(set_log_level_and_wait(env, "info").await, "the controller re-stamps the Deployment");
    let rolled = eventually(Duration::from_secs(15), || async {
        stamp("statefulset", "dx-core") == log_level_checksum("info")
            && stamp("deployment", "opted-in") == log_level_checksum("info")
    });
    assert!(rolled.await, "the StatefulSet and the opted-in Deployment are re-stamped");
    let untouched = holds_for(NOTHING_MORE, || async {
        generation(env, NS, "deployment", "dx-ring-api-opted-out") == out_generation
            && generation(env, NS, "deployment", "not-dx") == plain_generation
    });
    assert!(untouched.await, "the opted-out and the non-DX Deployment are not rolled within {NOTHING_MORE:?}");
    // The projected Secret is held.
    let (ok, _, err) = env.kubectl(&["delete", "secret", "projected-creds", "-n", NS]);
    assert!(!ok, "a Secret in use through a projected volume was deleted");
    assert!(
        err.contains(
            "- Secret e2e-roll/projected-creds: still used by Deployment e2e-roll/dx-ring-api-projected [config-in-use]"
        ),
        "{err}"
    );
}

/// claim-templates-change on a real UPDATE: the API server's own validation refuses a changed
/// volumeClaimTemplates before any validating webhook is called, so users see its message.
pub async fn a_claim_template_change_is_refused_by_the_api_server_before_the_webhook(env: &mut Env) {
    let core = std::fs::read_to_string(repo().join("examples/valid/core.yaml")).unwrap();
    let grown = core.replace("storage: 10Gi", "storage: 20Gi");
    assert_ne!(grown, core);
    let denials_before =
        env.webhook().metric("dx_admission_findings_total{rule=\"claim-templates-change\",severity=\"deny\"}").await;
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &grown);
    assert!(!ok, "the claim template change was applied");
    assert_eq!(
        err,
        "The StatefulSet \"dx-core\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than \
         'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and \
         'minReadySeconds' are forbidden\n"
    );
    let denials_after =
        env.webhook().metric("dx_admission_findings_total{rule=\"claim-templates-change\",severity=\"deny\"}").await;
    assert_eq!(denials_after, denials_before, "the webhook was not asked");
}

/// `--max-concurrent-reviews 1`: while a review holds the one evaluation slot (a /mutate waiting
/// on a direct read of a source the cache lacks, from an API server that does not answer), the
/// next review gets 503 and the reason at its deadline.
pub async fn with_every_evaluation_slot_taken_a_review_gets_503(env: &mut Env) {
    let kubeconfig = std::fs::read_to_string(&env.cluster.kubeconfig).unwrap();
    let server = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: https://")).unwrap().to_owned();
    let relay = Relay::start(server.parse().unwrap()).await;
    let _heal = Heal(&relay);
    let relayed = env.cluster.dir.path().join("kubeconfig-overloaded");
    std::fs::write(&relayed, kubeconfig.replace(&server, &relay.addr.to_string())).unwrap();
    let replica = TestServer::start_with(move |config| {
        let mut cluster = cluster_mode(&relayed, "replica-overloaded");
        cluster.fetch_timeout = Duration::from_secs(3);
        cluster.lease_name = "dx-admission-overloaded".into();
        config.cluster = Some(cluster);
        config.limits.max_concurrent_reviews = 1;
        config.limits.review_timeout = Duration::from_millis(300);
    })
    .await;
    let ready = eventually(Duration::from_secs(15), || async { replica.ops("/readyz").await.0 == 200 }).await;
    assert!(ready, "the replica lists the cluster");
    relay.stall();
    let slow = review("CREATE", Some(&yaml_from_str(&ring_api("never-created")).remove(0)), None);
    let holder = tokio::spawn({
        let client = replica.client();
        async move { client.post("/mutate", "application/json", slow.to_string().into()).await }
    });
    let taken =
        eventually(Duration::from_secs(5), || async { replica.metric("dx_admission_reviews_in_flight").await == 1.0 });
    assert!(taken.await, "the slow review holds the slot");
    let (status, answer) = replica
        .post("/validate", review("CREATE", Some(&yaml_from_str(&ring_api(CACHED_ONLY)).remove(0)), None).to_string())
        .await;
    assert_eq!(
        (status, &answer),
        (
            503,
            &serde_json::json!({
                "error": "overloaded",
                "message": "no evaluation slot became free within the review deadline; the server is overloaded",
            })
        )
    );
    let (status, answer) = holder.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["response"]["warnings"],
        serde_json::json!([format!(
            "ConfigMap {NS}/never-created not readable from the API server now; the rollout controller stamps its checksum later"
        )])
    );
    relay.heal();
    if let Some(server) = replica.server {
        server.shutdown().await;
    }
}

/// Helm's release Secrets (whole charts, gzipped, one per revision) are not watched: the config
/// cache counts a plain Secret created after one, and not the release. The Secret watch delivers
/// both in order, so once the plain one is counted the release would have been too.
pub async fn helm_release_secrets_are_not_cached(env: &mut Env) {
    let entries = "dx_admission_config_cache_entries";
    let before = env.webhook().metric(entries).await;
    let release = "apiVersion: v1\nkind: Secret\nmetadata: {name: sh.helm.release.v1.e2e.v1, namespace: dx}\n\
                   type: helm.sh/release.v1\nstringData: {release: H4sI}\n";
    let plain =
        "apiVersion: v1\nkind: Secret\nmetadata: {name: after-the-release, namespace: dx}\nstringData: {a: b}\n";
    for manifest in [release, plain] {
        let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(ok, "{err}");
    }
    let counted = eventually(Duration::from_secs(10), || async { env.webhook().metric(entries).await >= before + 1.0 });
    assert!(counted.await, "the plain Secret is cached");
    assert_eq!(env.webhook().metric(entries).await, before + 1.0, "the release Secret is not cached");
}

/// The rate limit: one change of a ConfigMap that 30 workloads read re-stamps them one at a time,
/// at most `max_patches_per_second` (20 here) a second, so the last is stamped at least 29/20 s
/// after the first (less the observer's polling interval, which is measured and printed).
pub async fn re_stamps_keep_to_the_rate_limit(env: &mut Env) {
    const WORKLOADS: usize = 30;
    let workload = |i: usize| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: burst-{i:02}\n  namespace: {NS}\n  labels: {{e2e-burst: 'yes'}}\n  \
             annotations: {{dx.hcl.com/auto-rollout: 'true'}}\nspec:\n  selector: {{matchLabels: {{app: burst-{i:02}}}}}\n  template:\n    \
             metadata: {{labels: {{app: burst-{i:02}}}}}\n    spec:\n      containers:\n      - name: app\n        image: example/app:1.0\n        \
             envFrom:\n        - configMapRef: {{name: burst-config}}\n"
        )
    };
    let config = |value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: burst-config, namespace: {NS}}}\ndata: {{a: '{value}'}}\n"
        )
    };
    let manifests: Vec<String> = std::iter::once(config("1")).chain((0..WORKLOADS).map(workload)).collect();
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &manifests.join("---\n"));
    assert!(ok, "{err}");
    let key = "checksum.dx.hcl.com/configmap.burst-config";
    let stamps = |env: &Env| -> Vec<String> {
        let (ok, out, err) = env.kubectl(&["get", "deployments", "-n", NS, "-l", "e2e-burst=yes", "-o", "json"]);
        assert!(ok, "{err}");
        let list: Value = serde_json::from_str(&out).unwrap();
        let items = list["items"].as_array().unwrap();
        items
            .iter()
            .map(|d| d["spec"]["template"]["metadata"]["annotations"][key].as_str().unwrap_or("").to_owned())
            .collect()
    };
    // Opted in by annotation, not label, they are stamped by the controller, not on create.
    let all_stamped = eventually(Duration::from_secs(20), || {
        let now = stamps(env);
        async move { now.len() == WORKLOADS && now.iter().all(|s| s == &now[0] && s.starts_with("sha256:")) }
    });
    assert!(all_stamped.await, "every workload is stamped: {:?}", stamps(env));
    let first = stamps(env);
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &config("2"));
    assert!(ok, "{err}");
    let (mut first_seen, mut polls, started) = (None, Vec::new(), Instant::now());
    let all_seen = loop {
        let poll = Instant::now();
        let changed = stamps(env).iter().filter(|s| **s != first[0]).count();
        polls.push(poll.elapsed());
        if changed > 0 && first_seen.is_none() {
            first_seen = Some(poll);
        }
        if changed == WORKLOADS {
            break poll;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "only {changed} of {WORKLOADS} re-stamped");
    };
    let spread = all_seen - first_seen.unwrap();
    let slowest_poll = polls.iter().max().copied().unwrap_or_default();
    println!(
        "e2e: {WORKLOADS} re-stamps spread over {:.2}s (at least {:.2}s at 20/s; polls took up to {:.2}s)",
        spread.as_secs_f64(),
        (WORKLOADS - 1) as f64 / 20.0,
        slowest_poll.as_secs_f64()
    );
    let floor = Duration::from_millis(50 * (WORKLOADS as u64 - 1)).saturating_sub(slowest_poll);
    assert!(spread >= floor, "{WORKLOADS} re-stamps in {spread:?}: faster than 20 a second allows");
}
