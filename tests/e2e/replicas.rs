//! The chart's replicas: dx-admission installed with its Helm chart and run as the chart runs
//! it — the Deployment's args and environment, the files its volumes hold, and a token of its
//! ServiceAccount from the TokenRequest API, never admin. Two replicas run outside the cluster
//! behind the chart's own webhook configurations: the API server reaches them through the chart's
//! Service (type ExternalName, the `service.externalName` value), over HTTP/1.1 with a pool of
//! keep-alive connections as it calls any Service, and a round-robin relay plays the Service's
//! endpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::common::binary::{Running, exits_cleanly_within, serve_with_env, sigterm};
use crate::common::{eventually, holds_for, metric_sum, yaml_from_str};
use crate::relay::Relay;
use crate::workloads::{New, patch_config_map, roll, snapshot};
use crate::{Env, chart, in_namespace};

/// The release, its namespace, and so the name of everything the chart makes.
pub const RELEASE: &str = "dx-admission";
pub const NAMESPACE: &str = "dx-system";
/// The chart's ServiceAccount, as the API server names its user.
const USER: &str = "system:serviceaccount:dx-system:dx-admission";
/// Long enough to hold a burst of edits; every rollout below waits this long first.
pub const DEBOUNCE: Duration = Duration::from_secs(5);
/// The background evaluation, quick enough for scenarios: the PolicyReport CRD from the chart, a
/// scan every 2 s, rollouts stuck after 5 s.
pub const REPORTS: &str = "reports.installCRD=true,reports.interval=2s,rollout.stuckAfter=5s";

/// The chart's replicas, keyed by identity (the pod name the chart passes).
pub struct Fleet {
    pub dir: PathBuf,
    /// The Deployment's container args, its paths moved into each replica's directory.
    args: Vec<String>,
    pub relay: Relay,
    /// The ServiceAccount's token.
    pub kubeconfig: PathBuf,
    pub replicas: BTreeMap<String, Running>,
    /// cert-manager mode: the serving Secret, projected into every replica's directory.
    pub projection: Option<Projection>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(projection) = &self.projection {
            projection.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// The serving Secret as the kubelet projects it into a pod: every replica's directory gets
/// its keys as files, and each change of the Secret swaps `..data` to a new generation.
pub struct Projection {
    state: std::sync::Arc<std::sync::Mutex<Projected>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A Secret's keys and decoded values.
type SecretFiles = Vec<(String, Vec<u8>)>;

#[derive(Default)]
struct Projected {
    resource_version: String,
    files: SecretFiles,
    mounts: Vec<crate::common::SecretMount>,
    /// Per mount directory, the index in `serials` of the certificate it was mounted with.
    mounted_at: BTreeMap<PathBuf, usize>,
    /// The serial of each `tls.crt` projected, in order.
    serials: Vec<String>,
}

/// The Secret `name` in [`NAMESPACE`]: its resourceVersion and its keys, decoded.
fn read_secret(env_kubectl: &Path, kubeconfig: &Path, name: &str) -> Option<(String, SecretFiles)> {
    let output = crate::cluster::run_kubectl(
        env_kubectl,
        kubeconfig,
        &["get", "secret", name, "-n", NAMESPACE, "-o", "json"],
        None,
    );
    if !output.status.success() {
        return None;
    }
    let secret: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let files = secret["data"]
        .as_object()?
        .iter()
        .map(|(k, v)| {
            (k.clone(), base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).unwrap())
        })
        .collect();
    Some((secret["metadata"]["resourceVersion"].as_str()?.to_owned(), files))
}

impl Projection {
    /// Waits for the serving Secret (cert-manager issues it) and follows it every 200 ms.
    fn start(env: &Env) -> Self {
        let (kubectl, kubeconfig) = (env.cluster.bins.kubectl.clone(), env.cluster.kubeconfig.clone());
        let secret = format!("{RELEASE}-tls");
        let deadline = Instant::now() + Duration::from_secs(60);
        let (resource_version, files) = loop {
            if let Some(read) =
                read_secret(&kubectl, &kubeconfig, &secret).filter(|(_, f)| f.iter().any(|(k, _)| k == "tls.crt"))
            {
                break read;
            }
            assert!(Instant::now() < deadline, "cert-manager issued no {secret} within 60s");
            std::thread::sleep(Duration::from_millis(200));
        };
        let serials = vec![serial_of_files(&files)];
        let state = std::sync::Arc::new(std::sync::Mutex::new(Projected {
            resource_version,
            files,
            mounts: Vec::new(),
            mounted_at: BTreeMap::new(),
            serials,
        }));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (follow, halt) = (std::sync::Arc::clone(&state), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            while !halt.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some((version, files)) = read_secret(&kubectl, &kubeconfig, &secret) {
                    let mut state = follow.lock().unwrap();
                    if version != state.resource_version {
                        for mount in &mut state.mounts {
                            mount.swap_files(&crate::common::borrowed(&files));
                        }
                        state.serials.push(serial_of_files(&files));
                        state.resource_version = version;
                        state.files = files;
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Self { state, stop }
    }

    /// Projects the Secret into `dir` from now on.
    fn mount(&self, dir: &Path) {
        let mut state = self.state.lock().unwrap();
        let mount = crate::common::SecretMount::of_files(dir, &crate::common::borrowed(&state.files));
        state.mounts.push(mount);
        let current = state.serials.len() - 1;
        state.mounted_at.insert(dir.to_owned(), current);
    }

    /// The serials projected into replica `identity`'s directory, from the one it started with.
    pub fn serials_of(&self, fleet_dir: &Path, identity: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let from = state.mounted_at[&fleet_dir.join(identity).join("etc/tls")];
        state.serials[from..].to_vec()
    }

    /// The serials of the serving certificates projected so far, in order.
    pub fn serials(&self) -> Vec<String> {
        self.state.lock().unwrap().serials.clone()
    }

    /// `tls.crt` of the Secret as last projected (the chain).
    pub fn tls_crt(&self) -> String {
        tls_crt_of(&self.state.lock().unwrap().files)
    }
}

fn tls_crt_of(files: &[(String, Vec<u8>)]) -> String {
    let cert = files.iter().find(|(k, _)| k == "tls.crt").map(|(_, v)| v.clone()).unwrap_or_default();
    String::from_utf8(cert).unwrap()
}

fn serial_of_files(files: &[(String, Vec<u8>)]) -> String {
    crate::common::serial_of_pem(&tls_crt_of(files))
}

impl Fleet {
    /// Installs the chart as [`RELEASE`] with `values` (`--set` lists) and the Service pointed
    /// at a new relay, and takes a token for its ServiceAccount. No replica runs yet. The
    /// suite's own replica and registrations (of the same names) go first.
    pub async fn install(env: &mut Env, values: &[&str]) -> Self {
        if let Some(server) = env.webhook.take().and_then(|webhook| webhook.server) {
            server.shutdown().await;
        }
        for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
            let (ok, _, err) = env.kubectl(&["delete", kind, RELEASE, "--ignore-not-found"]);
            assert!(ok, "{err}");
        }
        let relay = Relay::round_robin(Vec::new()).await;
        let service = format!("service.externalName=127.0.0.1,service.port={}", relay.addr.port());
        let mut args = vec!["install", RELEASE, chart::CHART, "--namespace", NAMESPACE, "--create-namespace"];
        args.extend(["--wait=hookOnly", "--set", &service]);
        for value in values {
            args.extend(["--set", value]);
        }
        let (ok, out, err) = chart::helm(env, &args);
        assert!(ok, "{out}{err}");
        let args = deployment_args(env);
        let self_managed = args.iter().any(|a| a == "--self-managed-certs");
        let dir =
            env.cluster.dir.path().join(if self_managed { "replicas-self-managed" } else { "replicas-cert-manager" });
        std::fs::create_dir_all(&dir).unwrap();
        let (ok, token, err) = env.kubectl(&[
            "create",
            "token",
            RELEASE,
            "-n",
            NAMESPACE,
            "--duration=2h",
            "--audience=https://kubernetes.default.svc",
        ]);
        assert!(ok, "{err}");
        let kubeconfig = dir.join("kubeconfig");
        env.cluster.token_kubeconfig(&kubeconfig, token.trim());
        let projection = (!self_managed).then(|| Projection::start(env));
        Self { dir, args, relay, kubeconfig, replicas: BTreeMap::new(), projection }
    }

    /// Starts replica `identity` as a pod of the chart's Deployment would run: its certificate
    /// directory (empty in self-managed mode, the projected Secret in cert-manager mode), the
    /// policy and checksum key files the volumes hold.
    pub fn start(&mut self, identity: &str, policy: &str, key: &[u8]) {
        let dir = self.dir.join(identity);
        for sub in ["etc/tls", "etc/policy", "etc/checksum"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        if let Some(projection) = &self.projection {
            projection.mount(&dir.join("etc/tls"));
        }
        std::fs::write(dir.join("etc/policy/policy.yaml"), policy).unwrap();
        std::fs::write(dir.join("etc/checksum/key"), key).unwrap();
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig.display());
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.push(&kubeconfig);
        let running =
            serve_with_env(&dir, &args, &[("DX_ADMISSION_NAMESPACE", NAMESPACE), ("DX_ADMISSION_IDENTITY", identity)]);
        self.replicas.insert(identity.to_owned(), running);
        self.route();
    }

    /// The relay sends new connections to every running replica, as a Service's endpoints.
    fn route(&self) {
        self.relay.retarget_all(self.replicas.values().map(|r| r.tls).collect());
    }

    /// Stops replica `identity` with SIGKILL (no drain, the Lease is not released).
    pub fn kill(&mut self, identity: &str) {
        let mut running = self.replicas.remove(identity).expect("a running replica");
        self.route();
        running.child.kill().unwrap();
        running.child.wait().unwrap();
    }

    /// The values of metric series `prefix` of replica `identity`: none where it exports none.
    pub async fn values(&self, identity: &str, prefix: &str) -> Vec<f64> {
        crate::common::metric_values(self.replicas[identity].ops, prefix).await
    }

    /// The sum of metric series `prefix` of replica `identity`.
    pub async fn metric(&self, identity: &str, prefix: &str) -> f64 {
        metric_sum(self.replicas[identity].ops, prefix).await
    }
}

/// The files the chart's volumes hold: its policy ConfigMap and its checksum key Secret.
pub fn volume_files(env: &Env) -> (String, Vec<u8>) {
    let (ok, policy, err) = env.kubectl(&[
        "get",
        "configmap",
        &format!("{RELEASE}-policy"),
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.data.policy\\.yaml}",
    ]);
    assert!(ok, "{err}");
    let (ok, key, err) = env.kubectl(&[
        "get",
        "secret",
        &format!("{RELEASE}-checksum-key"),
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.data.key}",
    ]);
    assert!(ok, "{err}");
    (policy, base64::engine::general_purpose::STANDARD.decode(key.trim()).unwrap())
}

/// The args of the Deployment the release installed, with the image's paths moved to where a
/// replica's directory holds them.
fn deployment_args(env: &Env) -> Vec<String> {
    let (ok, manifest, err) = chart::helm(env, &["get", "manifest", RELEASE, "--namespace", NAMESPACE]);
    assert!(ok, "{err}");
    let objects = yaml_from_str(&manifest);
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").expect("the chart's Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let schemas = fleet_schemas(env);
    if !schemas.exists() {
        crate::common::copy_schemas(&schemas);
    }
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .filter(|a| *a != "serve")
        .map(|a| {
            a.replace("/etc/dx-admission/", "etc/")
                .replace("/usr/share/dx-admission/schemas", schemas.to_str().unwrap())
        })
        .collect()
}

/// The schema directory the replicas serve (a copy of the repository's, which scenarios may
/// change as the DX team ships a schema update).
pub fn fleet_schemas(env: &Env) -> std::path::PathBuf {
    env.cluster.dir.path().join("fleet-schemas")
}

/// The caBundle of the chart's configuration of `kind`, decoded.
pub fn ca_bundle(env: &Env, kind: &str) -> String {
    let (_, out, _) = env.kubectl(&["get", kind, RELEASE, "-o", "jsonpath={.webhooks[0].clientConfig.caBundle}"]);
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(out.trim()).unwrap_or_default())
        .unwrap_or_default()
}

/// Waits (at most 60 s) until both of the chart's webhook configurations trust exactly `ca`.
pub async fn both_bundles_become(env: &Env, ca: &str) -> bool {
    eventually(Duration::from_secs(60), || {
        let done = ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"]
            .iter()
            .all(|kind| ca_bundle(env, kind) == ca);
        async move { done }
    })
    .await
}

/// Who holds the rollout Lease.
pub fn lease_holder(env: &Env) -> String {
    let (_, out, _) = env.kubectl(&[
        "get",
        "lease",
        &format!("{RELEASE}-rollout"),
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    out
}

/// Runs kubectl as the chart's ServiceAccount.
fn as_chart(env: &Env, args: &[&str]) -> (bool, String, String) {
    let fleet = env.fleet.as_ref().expect("the chart's replicas");
    let output = crate::cluster::run_kubectl(&env.cluster.bins.kubectl, &fleet.kubeconfig, args, None);
    let (out, err) = crate::cluster::text(&output);
    (output.status.success(), out, err)
}

/// The chart installed in self-managed mode, its two replicas run with its ServiceAccount's
/// token: they make and publish their certificates, take the Lease, and answer the API server
/// through the chart's webhook configurations — both of them, stamping the same checksums — and
/// the token cannot do what the chart does not grant.
pub async fn the_chart_runs_two_replicas_with_its_own_identity(env: &mut Env) {
    let mut fleet = Fleet::install(
        env,
        &["certificates.mode=self-managed", &format!("rollout.debounce={}s", DEBOUNCE.as_secs()), REPORTS],
    )
    .await;
    let (policy, key) = volume_files(env);
    for identity in ["dx-admission-a", "dx-admission-b"] {
        fleet.start(identity, &policy, &key);
    }
    env.fleet = Some(fleet);

    // Self-managed: a replica made the CA, stored it and published it in both configurations.
    let (ok, stored, err) =
        env.kubectl(&["get", "secret", &format!("{RELEASE}-tls"), "-n", NAMESPACE, "-o", "jsonpath={.data.ca\\.crt}"]);
    assert!(ok, "{err}");
    let ca = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(stored.trim()).unwrap()).unwrap();
    assert!(both_bundles_become(env, &ca).await, "both configurations trust the replicas' CA");
    let leader = eventually(Duration::from_secs(30), || {
        let holder = lease_holder(env);
        async move { holder == "dx-admission-a" || holder == "dx-admission-b" }
    });
    assert!(leader.await, "a replica holds the Lease: {:?}", lease_holder(env));

    // The chart's webhooks judge through the Service: the same denial as by URL.
    let (ok, _, err) =
        env.kubectl(&["apply", "--dry-run=server", "-f", "examples/broken/ring-api-unpinned-no-probe.yaml"]);
    assert!(!ok);
    assert!(
        err.contains(
            "admission webhook \"validate.dx-admission.hcl.com\" denied the request: Deployment dx/dx-ring-api-unpinned rejected under DX schema v2 (2 problems)"
        ),
        "{err}"
    );
    // Both replicas answer, and every answer stamps the same checksum the workload carries.
    let carried = crate::rollout::template_annotation(env, "dx", "deployment", "dx-ring-api", crate::AGGREGATE);
    let manifest = in_namespace("examples/valid/ring-api.yaml", "dx");
    let mut stamped = Vec::new();
    let fleet = env.fleet.as_ref().unwrap();
    // A keep-alive pool reuses an idle connection while requests come one at a time, so each
    // webhook would stick to one replica: concurrent creates make the API server open more.
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&env.cluster.kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(kube::Client::try_from(config).unwrap(), "dx");
    let template: k8s_openapi::api::apps::v1::Deployment = serde_yaml_ng::from_str(&manifest).unwrap();
    const CONCURRENT: usize = 16;
    let dry_run = kube::api::PostParams { dry_run: true, field_manager: None };
    let mut rounds = 0;
    let answered_by_both = loop {
        rounds += 1;
        let creates = (0..CONCURRENT).map(|i| {
            let mut deployment = template.clone();
            deployment.metadata.name = Some(format!("dx-ring-api-probe-{i}"));
            let (deployments, dry_run) = (&deployments, &dry_run);
            async move { deployments.create(dry_run, &deployment).await }
        });
        for created in futures_util::future::join_all(creates).await {
            let created = created.expect("a dry-run create");
            let annotations = created.spec.unwrap().template.metadata.unwrap().annotations.unwrap_or_default();
            stamped.push(annotations.get(crate::AGGREGATE).cloned().unwrap_or_default());
        }
        let a = fleet.metric("dx-admission-a", "dx_admission_reviews_total{endpoint=\"mutate\"").await;
        let b = fleet.metric("dx-admission-b", "dx_admission_reviews_total{endpoint=\"mutate\"").await;
        if (a > 0.0 && b > 0.0) || rounds == 50 {
            break a > 0.0 && b > 0.0;
        }
    };
    let both = answered_by_both;
    let connections = fleet.relay.connections.lock().unwrap().clone();
    assert!(both, "both replicas answer /mutate: connections {connections:?}");
    assert!(stamped.iter().all(|s| *s == carried), "every answer stamps {carried}: {stamped:?}");
    println!(
        "e2e: the chart's webhooks through its Service: {} dry-run creates, {CONCURRENT} at a time, {} connections per replica, every stamp {carried}",
        stamped.len(),
        connections.values().map(usize::to_string).collect::<Vec<_>>().join(" and ")
    );
    assert_eq!(connections.len(), 2, "the API server opened connections to both replicas: {connections:?}");
    // HTTP/2 would multiplex each webhook's calls on one connection: more than two connections
    // for two webhooks is HTTP/1.1 with a pool, as the API server calls a Service.
    assert!(connections.values().sum::<usize>() > 2, "a pool of connections: {connections:?}");

    // The chart grants what every feature needs: no watch, list or patch failed.
    for identity in ["dx-admission-a", "dx-admission-b"] {
        assert_eq!(fleet.metric(identity, "dx_admission_watch_errors_total").await, 0.0, "{identity}");
        assert_eq!(fleet.metric(identity, "dx_admission_rollouts_total{result=\"failed\"}").await, 0.0, "{identity}");
    }
    // And nothing more: a Secret's value, a pod, another Lease are out of its reach.
    let (ok, _, err) = env.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: other, namespace: {NAMESPACE}}}\nspec: {{}}\n"),
    );
    assert!(ok, "{err}");
    for (args, expected) in [
        (
            vec!["patch", "secret", "dx-admission-checksum-key", "-n", NAMESPACE, "-p", r#"{"data":{"key":"AA=="}}"#],
            format!(
                "Error from server (Forbidden): secrets \"dx-admission-checksum-key\" is forbidden: User \"{USER}\" cannot patch resource \"secrets\" in API group \"\" in the namespace \"{NAMESPACE}\"\n"
            ),
        ),
        (
            vec!["delete", "pod", "dx-core-0", "-n", "dx"],
            format!(
                "Error from server (Forbidden): pods \"dx-core-0\" is forbidden: User \"{USER}\" cannot delete resource \"pods\" in API group \"\" in the namespace \"dx\"\n"
            ),
        ),
        (
            vec!["annotate", "lease", "other", "-n", NAMESPACE, "taken=yes"],
            format!(
                "Error from server (Forbidden): leases.coordination.k8s.io \"other\" is forbidden: User \"{USER}\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"{NAMESPACE}\"\n"
            ),
        ),
        (
            vec!["delete", "configmap", "dx-core-config", "-n", "dx"],
            format!(
                "Error from server (Forbidden): configmaps \"dx-core-config\" is forbidden: User \"{USER}\" cannot delete resource \"configmaps\" in API group \"\" in the namespace \"dx\"\n"
            ),
        ),
    ] {
        let (ok, _, err) = as_chart(env, &args);
        assert!(!ok, "{args:?} is allowed");
        assert_eq!(err, expected, "{args:?}");
    }
}

/// A ConfigMap edit is rolled by whichever replica holds the Lease, once, after the debounce.
pub async fn the_lease_holder_rolls_a_config_map_edit_once(env: &mut Env) {
    let rolled =
        roll(env, "dx", 1, |env| patch_config_map(env, "dx", "dx-ring-api-config", r#"{"request.timeout":"45s"}"#))
            .await;
    rolled.report(&format!("kubectl patch of dx-ring-api-config, rolled by {}", lease_holder(env)));
    assert_eq!(rolled.counts(), ["deployment/dx-ring-api: 1"]);
    assert!(rolled.took >= DEBOUNCE, "rolled after the debounce ({DEBOUNCE:?}): {:?}", rolled.took);
}

/// 20 edits of one ConfigMap within the debounce window roll each workload that uses it once.
pub async fn a_burst_of_edits_within_the_debounce_window_rolls_once(env: &mut Env) {
    let mut burst = Duration::ZERO;
    let rolled = roll(env, "dx", 1, |env| {
        let started = Instant::now();
        for edit in 1..=20 {
            patch_config_map(env, "dx", "dx-content-composer-config", &format!(r#"{{"autosave.interval":"{edit}s"}}"#));
        }
        burst = started.elapsed();
    })
    .await;
    rolled.report(&format!("20 edits of dx-content-composer-config in {:.1}s", burst.as_secs_f64()));
    assert!(burst < DEBOUNCE, "the burst fits the debounce window: {burst:?}");
    assert_eq!(rolled.counts(), ["deployment/dx-content-composer: 1"]);
    let (_, out, _) = env.kubectl(&[
        "get",
        "configmap",
        "dx-content-composer-config",
        "-n",
        "dx",
        "-o",
        "jsonpath={.data.autosave\\.interval}",
    ]);
    assert_eq!(out, "20s");
    // The pods carry the checksum of the last edit: the one the workload's template carries.
    let carried = crate::rollout::template_annotation(env, "dx", "deployment", "dx-content-composer", crate::AGGREGATE);
    let pods: Vec<_> =
        rolled.after.pods.iter().filter(|p| p.owner.starts_with("ReplicaSet/dx-content-composer-")).collect();
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(pods.iter().all(|p| p.checksum.as_deref() == Some(carried.as_str())), "{pods:?}");
}

/// The Lease holder killed (SIGKILL: no drain, the Lease not released): the other replica takes
/// the Lease once it expires, re-rolls nothing, and rolls the next change once.
pub async fn a_killed_lease_holder_hands_over_and_nothing_rolls_twice(env: &mut Env) {
    let holder = lease_holder(env);
    let before = snapshot(env, "dx");
    let (policy, key) = volume_files(env);
    let killed = Instant::now();
    env.fleet.as_mut().unwrap().kill(&holder);
    let survivor = env.fleet.as_ref().unwrap().replicas.keys().next().unwrap().clone();
    let took_over = eventually(Duration::from_secs(40), || {
        let now = lease_holder(env) == survivor;
        async move { now }
    });
    assert!(took_over.await, "{survivor} takes the Lease from {holder}: {:?}", lease_holder(env));
    let handed_over = killed.elapsed();
    let nothing = holds_for(DEBOUNCE + crate::rollout::NOTHING_MORE, || async {
        New::between(&before, &snapshot(env, "dx")).count() == 0
    });
    assert!(nothing.await, "the new holder re-rolls nothing");
    let rolled =
        roll(env, "dx", 1, |env| patch_config_map(env, "dx", "dx-image-processor-config", r#"{"workers":"6"}"#)).await;
    rolled.report(&format!(
        "{holder} killed, {survivor} holds the Lease {:.1}s later; then dx-image-processor-config",
        handed_over.as_secs_f64()
    ));
    assert_eq!(rolled.counts(), ["deployment/dx-image-processor: 1"]);
    // The killed pod's replacement joins.
    env.fleet.as_mut().unwrap().start("dx-admission-c", &policy, &key);
}

/// Every replica stopped and started again at once: nothing rolls.
pub async fn every_replica_restarted_at_once_rolls_nothing(env: &mut Env) {
    let before = snapshot(env, "dx");
    let (policy, key) = volume_files(env);
    let fleet = env.fleet.as_mut().unwrap();
    // Terminating pods leave the Service's endpoints at once; each exits within the chart's
    // termination grace period (30 s) after its drain.
    let mut stopping: Vec<Running> = std::mem::take(&mut fleet.replicas).into_values().collect();
    fleet.route();
    let terminated = Instant::now();
    for running in &stopping {
        sigterm(&running.child);
    }
    for running in &mut stopping {
        exits_cleanly_within(running, Duration::from_secs(30)).await;
    }
    let exited = terminated.elapsed();
    for identity in ["dx-admission-d", "dx-admission-e"] {
        fleet.start(identity, &policy, &key);
    }
    let leader = eventually(Duration::from_secs(40), || {
        let holder = lease_holder(env);
        async move { holder == "dx-admission-d" || holder == "dx-admission-e" }
    });
    assert!(leader.await, "a restarted replica holds the Lease: {:?}", lease_holder(env));
    let nothing = holds_for(DEBOUNCE + crate::rollout::NOTHING_MORE, || async {
        New::between(&before, &snapshot(env, "dx")).count() == 0
    });
    assert!(nothing.await, "a restart rolls nothing: {:?}", New::between(&before, &snapshot(env, "dx")));
    println!(
        "e2e: every replica restarted at once (both exited {:.1}s after SIGTERM): 0 new ReplicaSets, 0 new StatefulSet revisions",
        exited.as_secs_f64()
    );
}
