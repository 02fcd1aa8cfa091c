//! End to end: dx-admission registered with a real kube-apiserver, driven by real kubectl and
//! Helm, asserting the text users see. One process owns the cluster, so its etcd and
//! kube-apiserver are always stopped by PID; scenarios run in order, selected and reported as
//! libtest does (`cargo test --test e2e rollout`, `-- --list`, `--skip`).

#[path = "../common/mod.rs"]
mod common;

mod backup;
mod capture;
mod cert_manager;
mod chart;
mod cluster;
mod drain;
mod image;
mod relay;
mod release;
mod replicas;
mod reports;
mod rollout;
mod secrets;
mod workloads;

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cluster::{Cluster, text};
use common::{Pki, TestServer, eventually, repo, serial_of_pem};
use dx_admission::checksum::annotations::AGGREGATE;
use dx_admission::cluster::ClusterConfig;
use dx_admission::policy::Settings;
use serde_json::Value;

/// The HMAC key the replicas share in these tests.
pub const CHECKSUM_KEY: &[u8] = b"e2e shared checksum key, 32 bytes";

/// Cluster mode for a replica named `identity`, with a short debounce.
pub fn cluster_mode(kubeconfig: &std::path::Path, identity: &str) -> ClusterConfig {
    ClusterConfig {
        kubeconfig: Some(kubeconfig.to_owned()),
        checksum_key: CHECKSUM_KEY.to_vec(),
        debounce: Duration::from_millis(500),
        max_patches_per_second: 20,
        lease_namespace: "default".into(),
        lease_name: "dx-admission-rollout".into(),
        identity: identity.into(),
        fetch_timeout: Duration::from_secs(1),
        report_interval: Duration::from_secs(600),
        rollout_stuck_after: Duration::from_secs(600),
    }
}

pub struct Env {
    pub cluster: Cluster,
    pub webhook: Option<TestServer>,
    /// Between the webhook and the API server, once a scenario put it there.
    pub relay: Option<Arc<relay::Relay>>,
    /// How many times the webhook configurations were registered (see [`Env::register`]).
    generation: u32,
    /// The chart's replicas, once a scenario installed them.
    pub fleet: Option<replicas::Fleet>,
}

impl Env {
    fn webhook(&self) -> &TestServer {
        self.webhook.as_ref().expect("webhook running")
    }

    /// (Re-)registers the webhook configurations with `ca_bundle`, and returns once the API
    /// server calls the webhooks by them.
    ///
    /// The API server loads webhook configurations asynchronously, and nothing it exposes says
    /// which one it uses. So each registration is a generation: its webhooks skip, by a
    /// `matchCondition`, objects labelled `e2e-probe: gen-<N>`. Once a dry-run create of a
    /// probe labelled so passes the validating webhook unjudged and leaves the mutating webhook
    /// unstamped, both configurations of generation N are in force.
    pub fn register(&mut self, ca_bundle: &str) {
        self.generation += 1;
        let probe = format!("gen-{}", self.generation);
        let url = format!("https://{}", self.webhook().tls_addr);
        let selector = dx_admission::policy::settings::Selector::default();
        let manifests = dx_admission::dev::webhook_configurations(&url, ca_bundle.as_bytes(), &selector, true);
        let condition = format!(
            "object == null || !has(object.metadata.labels) || !('e2e-probe' in object.metadata.labels) || \
             object.metadata.labels['e2e-probe'] != '{probe}'"
        );
        let mut documents = common::yaml_from_str(&manifests);
        for document in &mut documents {
            for webhook in document["webhooks"].as_array_mut().expect("webhooks") {
                webhook["matchConditions"] = serde_json::json!([{"name": "e2e-generation", "expression": condition}]);
            }
        }
        let manifests: Vec<String> = documents.iter().map(|d| serde_json::to_string(d).unwrap()).collect();
        let output = self.cluster.kubectl(&["apply", "-f", "-"], Some(&manifests.join("\n")));
        assert!(output.status.success(), "{:?}", text(&output));
        // A ConfigMap the validating webhook denies, and a Deployment the mutating one stamps.
        let label = |file: &str| {
            std::fs::read_to_string(repo().join(file))
                .unwrap()
                .replacen("  labels:\n", &format!("  labels:\n    e2e-probe: {probe}\n"), 1)
                .replace("name: dx-", "name: probe-dx-")
        };
        let (denied, stamped) =
            (label("examples/broken/core-config-bad-values.yaml"), label("examples/valid/ring-api.yaml"));
        // Unlabelled, the probe is judged: the configurations exist (the first has no predecessor
        // whose answers would look the same).
        let control = denied.replacen(&format!("    e2e-probe: {probe}\n"), "", 1);
        // Why generation N is not in force yet.
        let pending = || -> Option<String> {
            let judged = self.cluster.kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&control));
            if judged.status.success() {
                return Some("an unlabelled probe is not judged".into());
            }
            let validating = self.cluster.kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&denied));
            if !validating.status.success() {
                return Some(format!("the validating webhook judges the probe: {}", text(&validating).1));
            }
            let mutating =
                self.cluster.kubectl(&["apply", "--dry-run=server", "-o", "json", "-f", "-"], Some(&stamped));
            let (out, err) = text(&mutating);
            if !mutating.status.success() || out.contains(AGGREGATE) {
                return Some(format!("the mutating webhook stamps the probe: {err}"));
            }
            None
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(why) = pending() {
            assert!(Instant::now() < deadline, "the API server did not load webhook configuration {probe}: {why}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates `namespace` and a directory for `dx-admission serve` processes there, holding a
    /// serving pair (`tls.crt`, `tls.key`) from a new CA, which it returns.
    pub fn namespace_with_serving_pair(&self, namespace: &str) -> (std::path::PathBuf, Pki) {
        let (ok, _, err) = self.kubectl(&["create", "namespace", namespace]);
        assert!(ok, "{err}");
        let dir = self.cluster.dir.path().join(namespace);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki::new(&format!("dx-admission {namespace} test CA"));
        let (cert, key) = pki.issue();
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
        (dir, pki)
    }

    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let output = self.cluster.kubectl(args, None);
        let (out, err) = text(&output);
        (output.status.success(), out, err)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        let output = self.cluster.kubectl(args, Some(stdin));
        let (out, err) = text(&output);
        (output.status.success(), out, err)
    }
}

/// What kubectl prints when it applies a broken example: the reviewed text in
/// `tests/e2e/denials/<example>.txt`, written from what kubectl printed when
/// `DX_E2E_UPDATE_FIXTURES=1` (review the diff before committing it).
fn expected_denial(file: &str, printed: &str) -> String {
    let name = std::path::Path::new(file).file_stem().unwrap().to_string_lossy().into_owned();
    let golden = repo().join("tests/e2e/denials").join(format!("{name}.txt"));
    if std::env::var_os("DX_E2E_UPDATE_FIXTURES").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, printed).unwrap();
    }
    std::fs::read_to_string(&golden).unwrap_or_else(|e| panic!("{}: {e}", golden.display()))
}

fn broken_examples() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("examples/broken"))
        .unwrap()
        .map(|e| format!("examples/broken/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    files.sort();
    files
}

fn in_namespace(file: &str, namespace: &str) -> String {
    std::fs::read_to_string(repo().join(file)).unwrap().replace("namespace: dx", &format!("namespace: {namespace}"))
}

async fn valid_deployment_is_created(env: &mut Env) {
    let (ok, out, err) = env.kubectl(&["apply", "-f", "examples/valid/"]);
    assert!(ok, "{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "configmap/dx-content-composer-config created",
            "configmap/dx-core-config created",
            "configmap/dx-dam-config created",
            "configmap/dx-global-config created",
            "configmap/dx-image-processor-config created",
            "configmap/dx-persistence-config created",
            "configmap/dx-ring-api-config created",
            "deployment.apps/dx-content-composer created",
            "deployment.apps/dx-image-processor created",
            "deployment.apps/dx-ring-api created",
            "persistentvolumeclaim/dx-core-profile created",
            "persistentvolumeclaim/dx-dam-upload created",
            "statefulset.apps/dx-core created",
            "statefulset.apps/dx-dam created",
            "statefulset.apps/dx-persistence created",
        ]
    );
    // Applying again is an UPDATE of every object: still allowed. The StatefulSets with claim
    // templates come back "configured": kubectl re-sends templates the API server has defaulted,
    // and claim-templates-change compares them by meaning, so they pass.
    let (ok, out, err) = env.kubectl(&["apply", "-f", "examples/valid/"]);
    assert!(ok, "{err}");
    let configured: Vec<&str> = out.lines().filter(|l| l.ends_with(" configured")).collect();
    assert_eq!(
        configured,
        ["statefulset.apps/dx-core configured", "statefulset.apps/dx-persistence configured"],
        "{out}"
    );
    assert_eq!(out.lines().filter(|l| l.ends_with(" unchanged")).count(), 13, "{out}");
    // On the simulated nodes every pod of the example turns Ready: claims bound, pods scheduled.
    let started = Instant::now();
    workloads::wait_until_rolled_out(env, "dx", Duration::from_secs(180)).await;
    let pods = workloads::pods(env, "dx");
    let ready = pods.iter().filter(|p| p.ready).count();
    println!("e2e: the DX example: {ready} pods Ready {:.1}s after the apply", started.elapsed().as_secs_f64());
    assert_eq!(ready, 12, "2 pods each of 6 workloads: {pods:?}");
}

async fn broken_examples_are_rejected_with_every_finding(env: &mut Env) {
    // One in full, exactly as a user sees it.
    let (ok, _, err) = env.kubectl(&["apply", "-f", "examples/broken/ring-api-unpinned-no-probe.yaml"]);
    assert!(!ok);
    assert_eq!(
        err,
        "Error from server (Forbidden): error when creating \"examples/broken/ring-api-unpinned-no-probe.yaml\": \
         admission webhook \"validate.dx-admission.hcl.com\" denied the request: \
         Deployment dx/dx-ring-api-unpinned rejected under DX schema v2 (2 problems):\n\
         - spec.template.spec.containers[0].image: image \"hcl/dx/ring-api:latest\" uses the moving tag latest [image-pinned] fix: use a DX release tag (e.g. :95_CF225) or an @sha256 digest\n\
         - spec.template.spec.containers[0].readinessProbe: container \"ring-api\" has no readiness probe [readiness-probe] fix: add a readinessProbe (e.g. an httpGet on the application's health endpoint)\n"
    );
    for file in broken_examples() {
        let (ok, _, err) = env.kubectl(&["apply", "-f", &file]);
        assert!(!ok, "{file} was accepted");
        assert_eq!(err, expected_denial(&file, &err), "{file}");
    }
}

async fn server_dry_run_denies_the_same_and_stores_nothing(env: &mut Env) {
    for file in broken_examples() {
        let (ok, _, err) = env.kubectl(&["apply", "--dry-run=server", "-f", &file]);
        assert!(!ok, "{file}");
        // The same text as without the dry run (read, never written, here).
        let name = std::path::Path::new(&file).file_stem().unwrap().to_string_lossy().into_owned();
        let golden = std::fs::read_to_string(repo().join("tests/e2e/denials").join(format!("{name}.txt"))).unwrap();
        assert_eq!(err, golden, "{file}");
    }
    let (ok, _, err) = env.kubectl(&["get", "deployment", "dx-ring-api-unpinned", "-n", "dx"]);
    assert!(!ok);
    assert_eq!(err, "Error from server (NotFound): deployments.apps \"dx-ring-api-unpinned\" not found\n");

    // In a namespace in warn mode the same object is admitted, with Warning: lines.
    let manifest = in_namespace("examples/broken/ring-api-unpinned-no-probe.yaml", "dx-canary");
    let (ok, out, err) = env.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &manifest);
    assert!(ok, "{err}");
    assert_eq!(out, "deployment.apps/dx-ring-api-unpinned created (server dry run)\n");
    // The mutating webhook warns first: the Deployment's ConfigMaps do not exist in dx-canary.
    assert_eq!(
        err,
        "Warning: ConfigMap dx-canary/dx-global-config does not exist yet; pods will not start until it does\n\
         Warning: ConfigMap dx-canary/dx-ring-api-config does not exist yet; pods will not start until it does\n\
         Warning: spec.template.spec.containers[0].image: image \"hcl/dx/ring-api:latest\" uses the moving tag latest [image-pinned]\n\
         Warning: spec.template.spec.containers[0].readinessProbe: container \"ring-api\" has no readiness probe [readiness-probe]\n"
    );
    let (ok, _, _) = env.kubectl(&["get", "deployment", "dx-ring-api-unpinned", "-n", "dx-canary"]);
    assert!(!ok, "a dry run stores nothing");
}

/// Rule severities set for one namespace in the policy file hold through the API server: in
/// dx-audit image-pinned is audit (not shown) and readiness-probe warn, so the object is admitted
/// with one Warning line.
async fn namespace_rule_severities_apply_through_the_api_server(env: &mut Env) {
    let manifest = in_namespace("examples/broken/ring-api-unpinned-no-probe.yaml", "dx-audit");
    let (ok, out, err) = env.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &manifest);
    assert!(ok, "{err}");
    assert_eq!(out, "deployment.apps/dx-ring-api-unpinned created (server dry run)\n");
    assert_eq!(
        err,
        "Warning: ConfigMap dx-audit/dx-global-config does not exist yet; pods will not start until it does\n\
         Warning: ConfigMap dx-audit/dx-ring-api-config does not exist yet; pods will not start until it does\n\
         Warning: spec.template.spec.containers[0].readinessProbe: container \"ring-api\" has no readiness probe [readiness-probe]\n"
    );
    // The same object in dx, where the global severities hold, is denied for both.
    let (ok, _, err) =
        env.kubectl(&["apply", "--dry-run=server", "-f", "examples/broken/ring-api-unpinned-no-probe.yaml"]);
    assert!(!ok);
    assert!(err.contains("rejected under DX schema v2 (2 problems)"), "{err}");
}

async fn an_update_that_breaks_a_rule_is_rejected(env: &mut Env) {
    let downgraded = in_namespace("examples/valid/core.yaml", "dx").replace("95.225.0", "95.210.0");
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &downgraded);
    assert!(!ok);
    assert!(
        err.contains(
            "admission webhook \"validate.dx-admission.hcl.com\" denied the request: StatefulSet dx/dx-core rejected under DX schema v2 (2 problems):\n\
             - metadata.labels[app.kubernetes.io/version]: 95.225.0 -> 95.210.0 is a downgrade; a rollback needs the backup taken before the update to 95.225.0 [version-downgrade] \
             fix: restore the backup taken before the update, then set annotation dx.hcl.com/allow-downgrade: \"true\"\n\
             - StatefulSet dx/dx-core: a category A change of core needs a backup first, and no completed backup of core was found in dx \
             (a Job or VolumeSnapshot labelled dx.hcl.com/backup-of: core or all) [backup-before-update]"
        ),
        "{err}"
    );
    assert!(err.starts_with("Error from server (Forbidden): error when applying patch:"), "{err}");
    let renamed = in_namespace("examples/valid/configmaps.yaml", "dx")
        .replace("log.level: info\n  dx.host", "logLevel: info\n  dx.host");
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &renamed);
    assert!(!ok);
    assert!(
        err.contains("- data[logLevel]: was renamed to \"log.level\" in schema v2 [schema-renamed-key] fix: rename data[logLevel] to data[log.level]; the value can stay"),
        "{err}"
    );
}

async fn helm_upgrade_that_breaks_a_rule_fails_readably(env: &mut Env) {
    let chart = repo().join("tests/e2e/charts/dx-mini");
    let chart = chart.to_str().unwrap();
    let helm = |args: &[&str]| chart::helm(env, args);
    let (ok, out, err) =
        helm(&["install", "mini", chart, "--namespace", "e2e-helm", "--create-namespace", "--wait=hookOnly"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("STATUS: deployed"), "{out}");
    let (ok, out, err) = helm(&["upgrade", "mini", chart, "--namespace", "e2e-helm", "--set", "image.tag=latest"]);
    assert!(!ok, "{out}");
    assert!(
        err.ends_with(
            "Error: UPGRADE FAILED: server-side apply failed for object e2e-helm/dx-ring-api apps/v1, Kind=Deployment: \
             admission webhook \"validate.dx-admission.hcl.com\" denied the request: Deployment e2e-helm/dx-ring-api rejected under DX schema v2 (1 problem):\n\
             - spec.template.spec.containers[0].image: image \"hcl/dx/ring-api:latest\" uses the moving tag latest [image-pinned] fix: use a DX release tag (e.g. :95_CF225) or an @sha256 digest\n"
        ),
        "{err}"
    );
    let (ok, out, err) = helm(&["history", "mini", "--namespace", "e2e-helm", "-o", "json"]);
    assert!(ok, "{err}");
    let history: Value = serde_json::from_str(&out).unwrap();
    let statuses: Vec<&str> = history.as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["deployed", "failed"], "{out}");
    // A schema violation in values is refused the same way.
    let (ok, _, err) = helm(&["upgrade", "mini", chart, "--namespace", "e2e-helm", "--set", "logLevel=verbose"]);
    assert!(!ok);
    assert!(
        err.contains("- data[log.level]: \"verbose\" is not one of: error, warn, info, debug, trace [schema]"),
        "{err}"
    );
    // A good upgrade that changes the ConfigMap changes the Deployment's checksum, in one rollout:
    // the webhook stamps the Deployment Helm sends, so the controller has nothing left to do.
    let checksum_before = rollout::template_annotation(env, "e2e-helm", "deployment", "dx-ring-api", AGGREGATE);
    let generation_before = rollout::generation(env, "e2e-helm", "deployment", "dx-ring-api");
    let (ok, out, err) = helm(&["upgrade", "mini", chart, "--namespace", "e2e-helm", "--set", "logLevel=debug"]);
    assert!(ok, "{out}{err}");
    let data = mini_log_level(env);
    assert_eq!(data, "debug");
    let checksum_after = rollout::template_annotation(env, "e2e-helm", "deployment", "dx-ring-api", AGGREGATE);
    assert!(checksum_before.starts_with("sha256:"), "{checksum_before}");
    assert_ne!(checksum_after, checksum_before, "the ConfigMap change changes the checksum");
    let once = common::holds_for(rollout::NOTHING_MORE, || async {
        rollout::generation(env, "e2e-helm", "deployment", "dx-ring-api") == generation_before + 1
    });
    assert!(once.await, "exactly one rollout, and no second within {:?}", rollout::NOTHING_MORE);
}

async fn a_post_renderer_refuses_a_bad_release_before_anything_is_applied(env: &mut Env) {
    let chart = repo().join("tests/e2e/charts/dx-mini");
    let chart = chart.to_str().unwrap();
    let helm = |args: &[&str]| chart::helm(env, args);
    let (ok, out, err) = helm(&["plugin", "install", "charts/plugins/dx-admission"]);
    assert!(ok, "{out}{err}");
    let (_, before, _) = helm(&["history", "mini", "--namespace", "e2e-helm", "-o", "json"]);
    // The ConfigMap change and the broken Deployment come in one release: without the
    // post-renderer the ConfigMap would be applied before the Deployment is refused.
    let (ok, out, err) = helm(&[
        "upgrade",
        "mini",
        chart,
        "--namespace",
        "e2e-helm",
        "--set",
        "logLevel=warn",
        "--set",
        "image.tag=latest",
        "--post-renderer",
        "dx-admission",
    ]);
    assert!(!ok, "{out}");
    // Helm 4 keeps a plugin's stderr to itself (dx-admission also writes the reasons to the
    // terminal, when there is one); the release fails before anything is applied.
    assert!(
        err.ends_with(
            "Error: UPGRADE FAILED: error while running post render on files: failed to invoke post-renderer plugin \"dx-admission\": plugin \"dx-admission\" exited with error\n"
        ),
        "{err}"
    );

    let data = mini_log_level(env);
    assert_eq!(data, "debug", "nothing was applied: the ConfigMap keeps its value");
    let (_, after, _) = helm(&["history", "mini", "--namespace", "e2e-helm", "-o", "json"]);
    assert_eq!(after, before, "no release revision was recorded");
    // A clean release passes through the post-renderer unchanged.
    let (ok, out, err) = helm(&[
        "upgrade",
        "mini",
        chart,
        "--namespace",
        "e2e-helm",
        "--set",
        "logLevel=warn",
        "--post-renderer",
        "dx-admission",
    ]);
    assert!(ok, "{out}{err}");
    let data = mini_log_level(env);
    assert_eq!(data, "warn");
}

/// The `log.level` the dx-mini release's ConfigMap holds in the cluster.
fn mini_log_level(env: &Env) -> String {
    let (ok, out, err) = env.kubectl(&[
        "get",
        "configmap",
        "dx-ring-api-config",
        "-n",
        "e2e-helm",
        "-o",
        "jsonpath={.data.log\\.level}",
    ]);
    assert!(ok, "{err}");
    out
}

async fn certificates_rotate_under_load_without_a_failed_request(env: &mut Env) {
    let failures = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kubeconfig = env.cluster.kubeconfig.clone();
    let kubectl = env.cluster.bins.kubectl.clone();
    let manifest = repo().join("examples/valid/ring-api.yaml");
    let load = {
        let (failures, requests, stop) = (Arc::clone(&failures), Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let output = std::process::Command::new(&kubectl)
                    .arg(format!("--kubeconfig={}", kubeconfig.display()))
                    .args(["apply", "--dry-run=server", "-f"])
                    .arg(&manifest)
                    .output()
                    .unwrap();
                requests.fetch_add(1, Ordering::SeqCst);
                if !output.status.success() {
                    failures.fetch_add(1, Ordering::SeqCst);
                    errors.push(String::from_utf8_lossy(&output.stderr).into_owned());
                }
            }
            errors
        })
    };
    let next_ca = Pki::new("dx-admission test CA (next)");
    let webhook = env.webhook.as_mut().unwrap();
    let both = format!("{}{}", webhook.pki.ca_pem, next_ca.ca_pem);
    // The test's own client trusts both CAs, so it can watch which pair serves.
    let client = common::Client { ca_pem: both.clone(), ..webhook.client() };
    let wait_for = |serial: String| {
        let client = client.clone();
        async move { eventually(Duration::from_secs(10), || async { client.serial().await == serial }).await }
    };
    // Each step waits for applies answered since the one before, so every step is under load.
    let answered_since = |mark: usize| {
        let requests = Arc::clone(&requests);
        async move {
            let more = eventually(Duration::from_secs(20), || async { requests.load(Ordering::SeqCst) >= mark + 3 });
            assert!(more.await, "the load goes on");
            requests.load(Ordering::SeqCst)
        }
    };
    let mut mark = answered_since(0).await;
    // 1. A new serving pair from the same CA.
    let (cert, key) = webhook.pki.issue();
    webhook.mount.swap(&cert, &key);
    assert!(wait_for(serial_of_pem(&cert)).await, "the rotated pair serves");
    mark = answered_since(mark).await;
    // 2. A CA roll: both CAs in the bundle, then a pair from the new CA, then the new CA alone.
    env.register(&both);
    mark = answered_since(mark).await;
    let webhook = env.webhook.as_mut().unwrap();
    let (cert, key) = next_ca.issue();
    webhook.mount.swap(&cert, &key);
    assert!(wait_for(serial_of_pem(&cert)).await, "the pair from the new CA serves");
    mark = answered_since(mark).await;
    env.register(&next_ca.ca_pem.clone());
    answered_since(mark).await;
    stop.store(true, Ordering::SeqCst);
    let errors = load.join().unwrap();
    let (done, failed) = (requests.load(Ordering::SeqCst), failures.load(Ordering::SeqCst));
    println!("e2e: rotation under load: {done} kubectl applies, {failed} failed");
    assert_eq!(failed, 0, "failed requests during rotation: {errors:?}");
}

async fn api_server_requests_are_captured_for_replay(env: &mut Env) {
    let webhook = env.webhook();
    let (cert, key) = webhook.pki.issue();
    let capture = capture::Capture::start(&cert, &key).await;
    let ca = base64_encode(&webhook.pki.ca_pem);
    let config = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: e2e-capture\n\
         webhooks:\n  - name: capture.e2e.dx-admission.hcl.com\n    admissionReviewVersions: [v1]\n    sideEffects: None\n    failurePolicy: Ignore\n\
         \x20   clientConfig:\n      url: https://{}/capture\n      caBundle: {ca}\n\
         \x20   rules:\n      - apiGroups: [\"\", apps]\n        apiVersions: [v1]\n        operations: [CREATE, UPDATE, DELETE]\n        resources: [configmaps, statefulsets, deployments]\n\
         \x20   namespaceSelector:\n      matchLabels:\n        kubernetes.io/metadata.name: e2e-capture\n",
        capture.addr
    );
    // The capture CA is the original test CA; after the CA roll the webhook serves from another.
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &config);
    assert!(ok, "{err}");
    let (ok, _, err) = env.kubectl(&["create", "namespace", "e2e-capture"]);
    assert!(ok, "{err}");
    // The API server picks up a new webhook configuration asynchronously: probe until it calls.
    let probe = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe, namespace: e2e-capture}\ndata: {a: b}\n";
    let mut round = 0;
    let called = eventually(Duration::from_secs(15), || {
        round += 1;
        let manifest = probe.replace("{a: b}", &format!("{{a: '{round}'}}"));
        let _ = env.kubectl_stdin(&["apply", "-f", "-"], &manifest);
        let seen = !capture.bodies.lock().unwrap().is_empty();
        async move { seen }
    })
    .await;
    assert!(called, "the API server calls the capturing webhook");
    let (ok, _, err) = env.kubectl(&["delete", "configmap", "probe", "-n", "e2e-capture"]);
    assert!(ok, "{err}");
    capture.bodies.lock().unwrap().clear();
    let core = in_namespace("examples/valid/core.yaml", "e2e-capture");
    let config_map = in_namespace("examples/valid/configmaps.yaml", "e2e-capture");
    let ring = in_namespace("examples/valid/ring-api.yaml", "e2e-capture");
    for manifest in [&core, &config_map, &ring] {
        let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(ok, "{err}");
    }
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &core.replace("replicas: 2", "replicas: 3"));
    assert!(ok, "{err}");
    let broken = in_namespace("examples/broken/core-config-bad-values.yaml", "e2e-capture");
    let (ok, _, _) = env.kubectl_stdin(&["apply", "-f", "-"], &broken);
    assert!(!ok);
    let (ok, _, err) = env.kubectl(&["delete", "configmap", "dx-dam-config", "-n", "e2e-capture"]);
    assert!(ok, "{err}");
    let (ok, _, err) = env.kubectl(&["delete", "validatingwebhookconfiguration", "e2e-capture"]);
    assert!(ok, "{err}");

    let bodies = capture.bodies.lock().unwrap().clone();
    let operations: Vec<(String, String)> = bodies
        .iter()
        .map(|b| {
            (
                b["request"]["operation"].as_str().unwrap().to_owned(),
                b["request"]["kind"]["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("CREATE", "StatefulSet"),
        ("CREATE", "ConfigMap"),
        ("CREATE", "Deployment"),
        ("UPDATE", "StatefulSet"),
        ("DELETE", "ConfigMap"),
    ] {
        assert!(
            operations.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} not captured: {operations:?}"
        );
    }
    for body in &bodies {
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    }
    // Every captured request gets the same answer from dx-admission as the API server got.
    for body in &bodies {
        let answer = env.webhook().validate(body).await;
        assert_eq!(answer["uid"], body["request"]["uid"]);
        let denied = body["request"]["name"] == "dx-core-config-typos";
        assert_eq!(answer["allowed"], !denied, "{}", body["request"]["name"]);
    }
    let target = if std::env::var_os("DX_E2E_UPDATE_FIXTURES").is_some() {
        repo().join("tests/fixtures/admission-reviews/e2e")
    } else {
        env.cluster.dir.path().join("captured")
    };
    if target.exists() && std::env::var_os("DX_E2E_UPDATE_FIXTURES").is_some() {
        std::fs::remove_dir_all(&target).unwrap();
    }
    let written = capture.save(&target);
    println!("e2e: captured {} AdmissionReview bodies into {}", written.len(), target.display());
}

async fn with_the_webhook_down_dx_changes_are_refused_and_others_work(env: &mut Env) {
    let webhook = env.webhook.take().unwrap();
    let addr = webhook.tls_addr;
    if let Some(server) = webhook.server {
        server.shutdown().await;
    }
    // The mutating webhook is called first, so its failure is what the user sees.
    let manifest = in_namespace("examples/valid/dam.yaml", "dx").replace("replicas: 2", "replicas: 3");
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    assert!(!ok);
    let config = in_namespace("examples/valid/configmaps.yaml", "dx")
        .replace("log.level: info\n  dx.host", "log.level: debug\n  dx.host");
    let (ok, _, config_err) = env.kubectl_stdin(&["apply", "-f", "-"], &config);
    assert!(!ok, "ConfigMaps are guarded by the validating webhook alone");
    assert!(
        config_err.contains(&format!(
            "Internal error occurred: failed calling webhook \"validate.dx-admission.hcl.com\": failed to call webhook: Post \"https://{addr}/validate?timeout=10s\": dial tcp {addr}: connect: connection refused"
        )),
        "{config_err}"
    );
    assert!(
        err.contains(&format!(
            "Internal error occurred: failed calling webhook \"mutate.dx-admission.hcl.com\": failed to call webhook: Post \"https://{addr}/mutate?timeout=10s\": dial tcp {addr}: connect: connection refused"
        )),
        "{err}"
    );
    // Objects the selectors exclude keep working: non-DX objects, and kube-system.
    let plain = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain, namespace: dx}\ndata: {a: b}\n";
    let (ok, out, err) = env.kubectl_stdin(&["apply", "-f", "-"], plain);
    assert!(ok, "{err}");
    assert_eq!(out, "configmap/plain created\n");
    let system = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dx-in-kube-system\n  namespace: kube-system\n  labels: {app.kubernetes.io/part-of: dx}\ndata: {a: b}\n";
    let (ok, out, err) = env.kubectl_stdin(&["apply", "-f", "-"], system);
    assert!(ok, "{err}");
    assert_eq!(out, "configmap/dx-in-kube-system created\n");
    // The delete guard fails open (failurePolicy: Ignore): with dx-admission down, a ConfigMap a
    // workload uses can be deleted, as Kubernetes alone allows.
    let (ok, out, err) = env.kubectl(&["delete", "configmap", "app-config", "-n", "e2e-roll"]);
    assert!(ok, "{err}");
    assert_eq!(out, "configmap \"app-config\" deleted\n");
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

type Scenario = for<'a> fn(&'a mut Env) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

macro_rules! scenarios {
    ($($name:path),* $(,)?) => {
        vec![$((stringify!($name), (|env| Box::pin($name(env))) as Scenario)),*]
    };
}

/// The scenarios, in the order they run: later ones build on what earlier ones left in the
/// cluster (the valid deployment, the dx-mini release, the webhook's state).
fn scenarios() -> Vec<(&'static str, Scenario)> {
    scenarios![
        valid_deployment_is_created,
        workloads::a_config_map_edit_rolls_each_workload_that_uses_it_once,
        broken_examples_are_rejected_with_every_finding,
        server_dry_run_denies_the_same_and_stores_nothing,
        namespace_rule_severities_apply_through_the_api_server,
        an_update_that_breaks_a_rule_is_rejected,
        helm_upgrade_that_breaks_a_rule_fails_readably,
        a_post_renderer_refuses_a_bad_release_before_anything_is_applied,
        rollout::workloads_are_stamped_with_config_checksums,
        rollout::a_config_change_in_the_cluster_rolls_the_workload,
        rollout::a_failed_re_stamp_is_retried_until_the_workload_carries_the_change,
        rollout::deleting_a_config_in_use_is_refused,
        rollout::leadership_moves_and_a_restarted_controller_patches_nothing,
        rollout::with_the_api_server_unreachable_reviews_are_answered_from_the_cache,
        rollout::auto_rollout_opt_in_and_out_statefulsets_and_projected_secrets,
        rollout::a_claim_template_change_is_refused_by_the_api_server_before_the_webhook,
        rollout::with_every_evaluation_slot_taken_a_review_gets_503,
        rollout::helm_release_secrets_are_not_cached,
        rollout::re_stamps_keep_to_the_rate_limit,
        chart::the_chart_lints_clean_in_every_mode,
        chart::the_chart_renders_safe_defaults,
        chart::the_binary_accepts_what_the_chart_renders_in_every_mode,
        chart::serve_dev_prints_the_webhooks_the_chart_registers,
        chart::values_schema_rejects_wrong_values,
        chart::the_chart_installs_into_the_api_server_in_both_modes,
        chart::self_managed_certificates_are_made_trusted_and_renewed,
        chart::the_binary_manages_its_own_certificates_with_its_flags,
        api_server_requests_are_captured_for_replay,
        certificates_rotate_under_load_without_a_failed_request,
        secrets::no_secret_value_reaches_logs_metrics_annotations_or_messages,
        drain::a_replica_stopped_under_kubectl_apply_fails_no_apply,
        with_the_webhook_down_dx_changes_are_refused_and_others_work,
        replicas::the_chart_runs_two_replicas_with_its_own_identity,
        replicas::the_lease_holder_rolls_a_config_map_edit_once,
        replicas::a_burst_of_edits_within_the_debounce_window_rolls_once,
        replicas::a_killed_lease_holder_hands_over_and_nothing_rolls_twice,
        replicas::every_replica_restarted_at_once_rolls_nothing,
        release::the_dx_example_release_installs_and_every_pod_turns_ready,
        release::helm_upgrade_of_a_config_map_and_its_deployment_rolls_once,
        release::helm_rollback_scales_the_previous_replica_set_back_up,
        release::plan_before_helm_upgrade_predicts_exactly_what_rolls,
        release::a_secret_change_counts_as_c_of_the_component_using_it,
        backup::a_new_dam_release_needs_a_recent_backup,
        backup::a_refused_helm_rollback_changes_nothing_until_the_downgrade_is_declared,
        reports::an_object_the_webhook_never_saw_is_reported_until_fixed_or_deleted,
        reports::a_schema_change_flips_the_result_of_an_existing_object,
        reports::an_opted_out_workload_shows_stale_config_after_its_config_map_changes,
        reports::a_statefulset_whose_new_pod_never_turns_ready_is_reported_stuck,
        reports::report_tries_a_candidate_schema_version_on_what_runs,
        cert_manager::cert_manager_issues_injects_and_renews_under_load,
        cert_manager::a_ca_roll_by_cert_manager_fails_no_request,
        image::the_api_server_calls_the_containerized_webhook,
    ]
}

/// The cluster and the webhook every scenario shares, started by the first scenario that runs:
/// `--list`, or a filter that matches no scenario, starts nothing.
enum Suite {
    NotStarted,
    Running(Box<Env>),
    /// Why the cluster could not start; every selected scenario fails with it.
    Broken(String),
}

impl Suite {
    fn env(&mut self, runtime: &tokio::runtime::Runtime) -> Result<&mut Env, String> {
        if matches!(self, Suite::NotStarted) {
            *self = match std::panic::catch_unwind(AssertUnwindSafe(|| start(runtime))) {
                Ok(Ok(env)) => Suite::Running(Box::new(env)),
                Ok(Err(error)) => Suite::Broken(error),
                Err(_) => Suite::Broken("the cluster did not start (the panic above says why)".into()),
            };
        }
        match self {
            Suite::Running(env) => Ok(env),
            Suite::Broken(error) => Err(error.clone()),
            Suite::NotStarted => unreachable!("started above"),
        }
    }
}

/// Builds (or finds cached) the cluster binaries, starts etcd and kube-apiserver, and registers
/// an in-process webhook in cluster mode.
fn start(runtime: &tokio::runtime::Runtime) -> Result<Env, String> {
    let started = Instant::now();
    let bins = cluster::ensure_binaries().map_err(|error| format!("cannot build the cluster binaries: {error}"))?;
    let built = started.elapsed();
    let cluster = Cluster::start(bins)?;
    println!(
        "e2e: kube-apiserver {} ready {:.1}s after the binaries ({:.0}s finding or building them)",
        cluster::KUBERNETES,
        (started.elapsed() - built).as_secs_f64(),
        built.as_secs_f64()
    );
    let settings: Settings = serde_yaml_ng::from_str(
        "namespaces:\n  dx-canary: {mode: warn}\n  dx-audit: {rules: {image-pinned: audit, readiness-probe: warn}}\n",
    )
    .unwrap();
    let cluster_config = cluster_mode(&cluster.kubeconfig, "replica-a");
    let webhook = runtime.block_on(TestServer::start_with(move |config| {
        config.settings = settings;
        config.cluster = Some(cluster_config);
    }));
    let ca = webhook.pki.ca_pem.clone();
    let mut env = Env { cluster, webhook: Some(webhook), relay: None, generation: 0, fleet: None };
    for namespace in ["dx", "dx-canary", "dx-audit"] {
        let (ok, _, err) = env.kubectl(&["create", "namespace", namespace]);
        if !ok {
            return Err(format!("kubectl create namespace {namespace}: {err}"));
        }
    }
    env.register(&ca);
    Ok(env)
}

/// A libtest-compatible harness: `cargo test` filters, `--exact`, `--skip`, `--list` (as nextest
/// runs it) work as for any test binary. The scenarios run one at a time, in order.
fn main() -> ExitCode {
    let started = Instant::now();
    let mut args = libtest_mimic::Arguments::from_args();
    args.test_threads = Some(1);
    std::env::set_current_dir(repo()).unwrap();
    let runtime = Arc::new(tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap());
    let suite = Arc::new(Mutex::new(Suite::NotStarted));
    // The image scenario needs the image `.ci/run` builds; without it, it is reported ignored.
    let no_image = common::docker::unavailable();
    let trials = scenarios()
        .into_iter()
        .map(|(name, scenario)| {
            let ignored = name.starts_with("image::") && no_image.is_some();
            let (runtime, suite) = (Arc::clone(&runtime), Arc::clone(&suite));
            libtest_mimic::Trial::test(name, move || {
                let mut suite = suite.lock().unwrap_or_else(PoisonError::into_inner);
                let env = suite.env(&runtime)?;
                let begun = Instant::now();
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(scenario(env))));
                println!("e2e: {name} took {:.1}s", begun.elapsed().as_secs_f64());
                outcome.map_err(common::failed)
            })
            .with_ignored_flag(ignored)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    let ran = !matches!(*suite.lock().unwrap_or_else(PoisonError::into_inner), Suite::NotStarted);
    // Stops the webhook, kube-apiserver and etcd (by PID) before the process exits.
    *suite.lock().unwrap_or_else(PoisonError::into_inner) = Suite::NotStarted;
    if ran {
        println!("e2e: {:.0}s in all", started.elapsed().as_secs_f64());
    }
    conclusion.exit_code()
}
