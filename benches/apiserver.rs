//! The API-server benchmark: what a webhook costs as the real kube-apiserver sees it. The suite's
//! API server receives server-side dry-run creates and updates of the DX StatefulSet and
//! Deployment, and bursts of 300 objects, with in turn no webhook, an allow-all webhook (the
//! API server's own floor for calling one), dx-admission `/validate`, dx-admission `/mutate` +
//! `/validate` with `--cluster`, and Kyverno (built from its Go module) enforcing the same three
//! rules as a ClusterPolicy and as a ValidatingPolicy. Loopback URLs are called over HTTP/2,
//! Service references over HTTP/1.1 (an ExternalName Service to 127.0.0.1): both are measured.
//!
//! Figures per webhook and load: throughput, the client's end-to-end latency, the API server's
//! own `apiserver_admission_webhook_admission_duration_seconds` (mean, and p50/p99 interpolated
//! in its buckets), CPU per request of the webhook's process and of the API server, and RSS.
//!
//! Run: `cargo bench --bench apiserver` (the first run also builds the cluster and Kyverno from
//! the Go module proxy, cached like the end-to-end suite's binaries).
//! Alone: `cargo bench --bench apiserver -- [calls] [burst] [--webhooks none,allow-all,...]`.

#[path = "../tests/e2e/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::examples;
use common::load::{self, Outcome, Pace, Request, Target};
use hyper::Method;
use serde_json::{Value, json};
use support::{Point, Process, Tls, free_port, machine, plot, repo, start_baseline, start_dx};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KYVERNO_RELEASE: &str = "v1.19.1";
/// Where the measured requests go; webhooks select it by its label `dx-bench: "true"`.
const NAMESPACE: &str = "dx-bench";
/// An ExternalName Service to 127.0.0.1: a webhook referenced through it is called over HTTP/1.1.
const SERVICE: &str = "webhook";
const WARMUP: Duration = Duration::from_secs(1);
const RUN: Duration = Duration::from_secs(5);
/// Closed-loop connections to the API server.
const CONCURRENCY: [usize; 2] = [4, 16];
/// Open-loop rates, requests per second, spread over `OPEN_LOOP_CONNECTIONS`.
const RATES: [f64; 3] = [50.0, 150.0, 300.0];
const OPEN_LOOP_CONNECTIONS: usize = 16;
/// Objects of a release-like burst.
const BURST: usize = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    None,
    AllowAll,
    DxValidate,
    DxCluster,
    KyvernoPolicy,
    KyvernoCel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    /// `clientConfig.url` on loopback: the API server speaks HTTP/2.
    Url,
    /// `clientConfig.service`: the API server speaks HTTP/1.1 with a keep-alive pool.
    Service,
}

/// One webhook set-up measured.
#[derive(Clone, Copy, Debug)]
struct Subject {
    id: &'static str,
    label: &'static str,
    engine: Engine,
    transport: Transport,
}

const SUBJECTS: [Subject; 9] = [
    Subject { id: "none", label: "no webhook", engine: Engine::None, transport: Transport::Url },
    Subject { id: "allow-all", label: "allow-all, HTTP/2", engine: Engine::AllowAll, transport: Transport::Url },
    Subject {
        id: "allow-all-h1",
        label: "allow-all, HTTP/1.1",
        engine: Engine::AllowAll,
        transport: Transport::Service,
    },
    Subject { id: "dx-validate", label: "dx /validate, HTTP/2", engine: Engine::DxValidate, transport: Transport::Url },
    Subject {
        id: "dx-validate-h1",
        label: "dx /validate, HTTP/1.1",
        engine: Engine::DxValidate,
        transport: Transport::Service,
    },
    Subject {
        id: "dx-cluster",
        label: "dx /mutate+/validate --cluster, HTTP/2",
        engine: Engine::DxCluster,
        transport: Transport::Url,
    },
    Subject {
        id: "kyverno-policy",
        label: "Kyverno ClusterPolicy, HTTP/2",
        engine: Engine::KyvernoPolicy,
        transport: Transport::Url,
    },
    Subject {
        id: "kyverno-cel",
        label: "Kyverno ValidatingPolicy, HTTP/2",
        engine: Engine::KyvernoCel,
        transport: Transport::Url,
    },
    Subject {
        id: "kyverno-policy-h1",
        label: "Kyverno ClusterPolicy, HTTP/1.1",
        engine: Engine::KyvernoPolicy,
        transport: Transport::Service,
    },
];

const SECTIONS: [&str; 2] = ["calls", "burst"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    match args.first().map(String::as_str) {
        Some("baseline-server") => runtime.block_on(support::baseline::serve(&args[1..])),
        _ => runtime.block_on(bench(&args)),
    }
}

/// The API server's histogram of one webhook's call durations (summed over operations).
#[derive(Clone, Debug, Default)]
struct Histogram {
    /// (upper bound in s, cumulative count), ascending.
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Histogram {
    fn add(&mut self, other: &Histogram, sign: f64) {
        if self.buckets.is_empty() {
            self.buckets = other.buckets.iter().map(|&(le, _)| (le, 0.0)).collect();
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += sign * theirs.1;
        }
        self.sum += sign * other.sum;
        self.count += sign * other.count;
    }

    /// The `q` quantile in ms, interpolated linearly within its bucket (as PromQL's
    /// `histogram_quantile`): only as fine as the API server's buckets.
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.count <= 0.0 {
            return f64::NAN;
        }
        let rank = q * self.count;
        let mut lower = (0.0, 0.0);
        for &(le, cumulative) in &self.buckets {
            if cumulative >= rank {
                if le.is_infinite() {
                    return lower.0 * 1000.0;
                }
                let within = if cumulative > lower.1 { (rank - lower.1) / (cumulative - lower.1) } else { 0.0 };
                return (lower.0 + (le - lower.0) * within) * 1000.0;
            }
            lower = (le, cumulative);
        }
        f64::NAN
    }

    fn mean_ms(&self) -> f64 {
        if self.count > 0.0 { self.sum / self.count * 1000.0 } else { f64::NAN }
    }
}

const WEBHOOK_METRIC: &str = "apiserver_admission_webhook_admission_duration_seconds";

/// Every webhook's histogram in the API server's metrics text, by webhook name.
fn webhook_histograms(metrics: &str) -> BTreeMap<String, Histogram> {
    let label = |labels: &str, key: &str| -> Option<String> {
        let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
        Some(labels[start..].split('"').next()?.to_owned())
    };
    // Per series (name + other labels), then summed by name.
    let mut series: BTreeMap<(String, String), Histogram> = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(WEBHOOK_METRIC) else { continue };
        let Some((kind, rest)) = rest.split_once('{') else { continue };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        let Some(name) = label(labels, "name") else { continue };
        let key = labels.split(",le=").next().unwrap_or(labels).to_owned();
        let entry = series.entry((name, key)).or_default();
        match kind {
            "_bucket" => {
                let le = label(labels, "le").and_then(|l| l.parse::<f64>().ok()).unwrap_or(f64::INFINITY);
                entry.buckets.push((le, value));
            }
            "_sum" => entry.sum = value,
            "_count" => entry.count = value,
            _ => {}
        }
    }
    let mut by_name: BTreeMap<String, Histogram> = BTreeMap::new();
    for ((name, _), mut histogram) in series {
        histogram.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        by_name.entry(name).or_default().add(&histogram, 1.0);
    }
    by_name
}

/// The API server and what the benchmark asks of it.
struct Api {
    cluster: cluster::Cluster,
    target: Target,
}

impl Api {
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let output = self.cluster.kubectl(args, stdin);
        assert!(output.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn apply(&self, objects: &[Value]) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        self.kubectl(&["apply", "--server-side", "-f", "-"], Some(&list.to_string()));
    }

    async fn histograms(&self) -> BTreeMap<String, Histogram> {
        let request = Request::call(Method::GET, "/metrics", "", 200);
        let text = load::answer(&self.target, &request).await.expect("the API server's metrics");
        webhook_histograms(&text)
    }

    /// One dry-run create of `object`: (HTTP status, body).
    async fn dry_run_create(&self, object: &Value) -> (u16, String) {
        let request = Request::call(Method::POST, &collection(object, true), object.to_string(), 201);
        let (status, body) = load::exchange(&self.target, &request).await.expect("the API server answers");
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// The collection URL of `object` (in [`NAMESPACE`]), with `?dryRun=All` if `dry_run`.
fn collection(object: &Value, dry_run: bool) -> String {
    let plural = match object["kind"].as_str() {
        Some("StatefulSet") => "statefulsets",
        Some("Deployment") => "deployments",
        other => panic!("no collection for {other:?}"),
    };
    let query = if dry_run { "?dryRun=All" } else { "" };
    format!("/apis/apps/v1/namespaces/{NAMESPACE}/{plural}{query}")
}

fn example(file: &str, index: usize) -> Value {
    let mut object = examples("valid").into_iter().filter(|(name, _)| name == file).nth(index).expect("example").1;
    object["metadata"]["namespace"] = json!(NAMESPACE);
    object
}

/// The measured mix: dry-run creates and updates of the DX core StatefulSet and the RingAPI
/// Deployment (the objects updated exist; the ones created never do).
fn mix(core: &Value, ring_api: &Value) -> Vec<Request> {
    let mut requests = Vec::new();
    for object in [core, ring_api] {
        let mut created = object.clone();
        created["metadata"]["name"] = json!(format!("{}-new", object["metadata"]["name"].as_str().unwrap()));
        requests.push(Request::call(Method::POST, &collection(object, true), created.to_string(), 201));
        // A changed pod template (category C: no backup needed, as for a configuration change).
        let mut updated = object.clone();
        updated["spec"]["template"]["metadata"]["annotations"]["bench/revision"] = json!("2");
        let name = object["metadata"]["name"].as_str().unwrap();
        let path = format!("{}/{name}?dryRun=All", collection(object, false));
        requests.push(Request::call(Method::PUT, &path, updated.to_string(), 200));
    }
    requests
}

/// The three rules compared between the engines.
const COMPARED_RULES: [&str; 3] = ["image-pinned", "resources-required", "readiness-probe"];

/// Breaks `rule` in `container`: `:latest`, no cpu limit, no readiness probe.
fn break_rule(rule: &str, container: &mut Value) {
    let container = container.as_object_mut().unwrap();
    match rule {
        "image-pinned" => drop(container.insert("image".into(), json!("hcl/dx/core:latest"))),
        "resources-required" => drop(container["resources"]["limits"].as_object_mut().unwrap().remove("cpu")),
        "readiness-probe" => drop(container.remove("readinessProbe")),
        other => panic!("no way to break {other}"),
    }
}

/// The core StatefulSet broken as `rules` refuse.
fn broken(core: &Value, rules: &[&str]) -> Value {
    let mut broken = core.clone();
    broken["metadata"]["name"] =
        json!(if rules.len() == 1 { format!("dx-core-broken-{}", rules[0]) } else { "dx-core-broken".into() });
    for rule in rules {
        break_rule(rule, &mut broken["spec"]["template"]["spec"]["containers"][0]);
    }
    broken
}

/// A webhook configuration of `kind` for the subject's server on `port`.
fn webhook_configuration(kind: &str, name: &str, path: &str, transport: Transport, port: u16, ca: &str) -> Value {
    let client_config = match transport {
        Transport::Url => json!({"url": format!("https://127.0.0.1:{port}{path}")}),
        Transport::Service => {
            json!({"service": {"namespace": NAMESPACE, "name": SERVICE, "port": port, "path": path}})
        }
    };
    let mut client_config = client_config;
    client_config["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(ca));
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": format!("bench-{}", name.replace('.', "-"))},
        "webhooks": [{
            "name": name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            "clientConfig": client_config,
            "namespaceSelector": {"matchLabels": {"dx-bench": "true"}},
            "rules": [{
                "apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                "resources": ["statefulsets", "deployments"], "scope": "Namespaced"
            }]
        }]
    })
}

/// A subject being measured: its processes and how the API server names its webhooks.
struct Running {
    processes: Vec<Process>,
    /// Webhook names (prefix match) whose calls are this subject's.
    webhooks: Vec<String>,
    /// What to delete once it stops.
    cleanup: Vec<Vec<String>>,
}

/// Kyverno's admission controller, built once from its Go module; `Err` says why not.
fn kyverno_binary() -> Result<PathBuf, String> {
    let cache = std::env::var_os("DX_E2E_CACHE").map_or_else(|| repo().join(".cache/e2e"), PathBuf::from);
    let dir = cache.join(format!("kyverno-{KYVERNO_RELEASE}"));
    let binary = dir.join("kyverno");
    if binary.exists() {
        return Ok(binary);
    }
    eprintln!("building Kyverno {KYVERNO_RELEASE} from the Go module proxy (once; about 4 minutes, 3 GB)...");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let partial = dir.join(".kyverno.partial");
    let output = Command::new("go")
        .current_dir(repo().join("benches/kyverno"))
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=mod")
        .args(["build", "-trimpath", "-ldflags=-s -w", "-o"])
        .arg(&partial)
        .arg("github.com/kyverno/kyverno/cmd/kyverno")
        .output()
        .map_err(|e| format!("go: {e}"))?;
    if !output.status.success() {
        return Err(format!("go build of Kyverno failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    std::fs::rename(&partial, &binary).map_err(|e| e.to_string())?;
    Ok(binary)
}

/// Kyverno's CRDs (from its module), its namespace and the two ConfigMaps it reads.
fn prepare_kyverno(api: &Api) -> Result<(), String> {
    let output = Command::new("go")
        .current_dir(repo().join("benches/kyverno"))
        .env("GOFLAGS", "-mod=mod")
        .args(["list", "-m", "-json", "github.com/kyverno/kyverno"])
        .output()
        .map_err(|e| format!("go: {e}"))?;
    let module: Value = serde_json::from_slice(&output.stdout).map_err(|e| format!("go list: {e}"))?;
    let dir = PathBuf::from(module["Dir"].as_str().ok_or("Kyverno's module is not downloaded")?);
    for group in ["kyverno", "policies.kyverno.io", "reports", "policyreport"] {
        let crds = dir.join("config/crds").join(group);
        api.kubectl(&["apply", "--server-side", "-f", &crds.display().to_string()], None);
    }
    api.kubectl(&["create", "namespace", "kyverno"], None);
    api.apply(&[
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kyverno", "namespace": "kyverno"},
            "data": {"resourceFilters": "[Event,*,*][*/*,kube-system,*][*/*,kyverno,*][Node,*,*][ReplicaSet,*,*][EphemeralReport,*,*]",
                "generateSuccessEvents": "false"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kyverno-metrics", "namespace": "kyverno"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kyverno-svc", "namespace": "kyverno"},
            "spec": {"type": "ExternalName", "externalName": "127.0.0.1"}}),
        // Without `--serverIP` Kyverno registers its Service-referenced webhooks only while its own
        // Deployment exists and is neither rolling nor scaled to zero. Nothing runs this one (the
        // controllers are stopped): it stands for the process the benchmark starts.
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "kyverno-admission-controller", "namespace": "kyverno"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "kyverno-bench"}},
                "template": {"metadata": {"labels": {"app": "kyverno-bench"}},
                    "spec": {"containers": [{"name": "kyverno", "image": "kyverno-bench"}]}}}}),
    ]);
    Ok(())
}

/// Starts the subject's webhook and registers it; `Err` says why it cannot run here.
async fn start(
    subject: &Subject,
    api: &Api,
    tls: &Tls,
    scratch: &Path,
    kyverno: &Result<PathBuf, String>,
) -> Result<Running, String> {
    let register = |configurations: Vec<Value>| {
        let names: Vec<String> =
            configurations.iter().map(|c| c["webhooks"][0]["name"].as_str().unwrap().to_owned()).collect();
        api.apply(&configurations);
        names
    };
    let schemas = repo().join("schemas");
    let running = match subject.engine {
        Engine::None => Running { processes: Vec::new(), webhooks: Vec::new(), cleanup: Vec::new() },
        Engine::AllowAll => {
            let process = start_baseline(tls, true).await;
            let port = process.addr.port();
            let configuration = webhook_configuration(
                "ValidatingWebhookConfiguration",
                "allow-all.bench.dx",
                "/validate",
                subject.transport,
                port,
                &tls.ca_pem,
            );
            let cleanup = vec![vec!["validatingwebhookconfiguration".into(), "bench-allow-all-bench-dx".into()]];
            Running { webhooks: register(vec![configuration]), processes: vec![process], cleanup }
        }
        Engine::DxValidate | Engine::DxCluster => {
            let cluster = subject.engine == Engine::DxCluster;
            let (process, _) = start_dx(tls, &schemas, cluster.then_some(api.cluster.kubeconfig.as_path())).await;
            let port = process.addr.port();
            let mut configurations = Vec::new();
            let mut cleanup = Vec::new();
            if cluster {
                configurations.push(webhook_configuration(
                    "MutatingWebhookConfiguration",
                    "mutate.dx-admission.bench",
                    "/mutate",
                    subject.transport,
                    port,
                    &tls.ca_pem,
                ));
                cleanup.push(vec!["mutatingwebhookconfiguration".into(), "bench-mutate-dx-admission-bench".into()]);
            }
            configurations.push(webhook_configuration(
                "ValidatingWebhookConfiguration",
                "validate.dx-admission.bench",
                "/validate",
                subject.transport,
                port,
                &tls.ca_pem,
            ));
            cleanup.push(vec!["validatingwebhookconfiguration".into(), "bench-validate-dx-admission-bench".into()]);
            Running { webhooks: register(configurations), processes: vec![process], cleanup }
        }
        Engine::KyvernoPolicy | Engine::KyvernoCel => {
            let binary = kyverno.clone()?;
            let (file, kind) = if subject.engine == Engine::KyvernoPolicy {
                ("cluster-policy.yaml", "clusterpolicy")
            } else {
                ("validating-policy.yaml", "validatingpolicy")
            };
            let policy =
                std::fs::read_to_string(repo().join("benches/kyverno").join(file)).map_err(|e| e.to_string())?;
            api.kubectl(&["apply", "-f", "-"], Some(&policy));
            let port = free_port();
            let log = std::fs::File::create(scratch.join(format!("{}.log", subject.id))).map_err(|e| e.to_string())?;
            let mut command = Command::new(binary);
            command
                .arg(format!("--kubeconfig={}", api.cluster.kubeconfig.display()))
                .arg(format!("--webhookServerPort={port}"))
                .arg(format!("--servicePort={port}"))
                .arg(format!("--metricsPort={}", free_port()))
                .arg(format!("--controllerRuntimeMetricsAddress=127.0.0.1:{}", free_port()))
                .args([
                    "--caSecretName=kyverno-svc.kyverno.svc.kyverno-tls-ca",
                    "--tlsSecretName=kyverno-svc.kyverno.svc.kyverno-tls-pair",
                    "--backgroundServiceAccountName=system:serviceaccount:kyverno:kyverno-background-controller",
                    "--reportsServiceAccountName=system:serviceaccount:kyverno:kyverno-reports-controller",
                    // Evaluated in Kyverno's webhook, not handed to the API server as a native policy.
                    "--generateValidatingAdmissionPolicy=false",
                    "--loggingFormat=text",
                    "--v=2",
                    "--omitEvents=PolicyApplied,PolicySkipped",
                ])
                .envs([
                    ("KYVERNO_NAMESPACE", "kyverno"),
                    ("KYVERNO_SERVICEACCOUNT_NAME", "kyverno-admission-controller"),
                    ("KYVERNO_DEPLOYMENT", "kyverno-admission-controller"),
                    ("KYVERNO_POD_NAME", "kyverno-admission-controller-bench"),
                    ("KYVERNO_SVC", "kyverno-svc"),
                    ("KYVERNO_ROLE_NAME", "kyverno:admission-controller"),
                    ("INIT_CONFIG", "kyverno"),
                    ("METRICS_CONFIG", "kyverno-metrics"),
                ])
                .env("TUF_ROOT", {
                    let tuf = scratch.join("sigstore");
                    std::fs::create_dir_all(&tuf).map_err(|e| e.to_string())?;
                    tuf
                })
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log);
            if subject.transport == Transport::Url {
                command.arg(format!("--serverIP=127.0.0.1:{port}"));
            }
            let child = command.spawn().map_err(|e| format!("kyverno: {e}"))?;
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let process = Process { name: format!("Kyverno {KYVERNO_RELEASE}"), child, addr };
            let cleanup = vec![
                vec![kind.into(), "dx-workloads".into()],
                vec!["secret".into(), "-n".into(), "kyverno".into(), "--all".into()],
            ];
            Running { processes: vec![process], webhooks: vec!["".into()], cleanup }
        }
    };
    Ok(running)
}

/// Stops the subject and removes what it registered: its own configurations, and every webhook
/// configuration Kyverno made (it leaves them behind, pointing at a port nobody serves).
fn drop_webhooks(api: &Api, running: &mut Running) {
    // Killed first: a running Kyverno would register its configurations again.
    running.processes.clear();
    for command in &running.cleanup {
        let mut args: Vec<&str> = vec!["delete", "--ignore-not-found"];
        args.extend(command.iter().map(String::as_str));
        api.kubectl(&args, None);
    }
    let listed =
        api.kubectl(&["get", "validatingwebhookconfigurations,mutatingwebhookconfigurations", "-o", "name"], None);
    let kyverno: Vec<&str> = listed.lines().filter(|name| name.contains("/kyverno-")).collect();
    if !kyverno.is_empty() {
        let mut args = vec!["delete", "--ignore-not-found"];
        args.extend(kyverno);
        api.kubectl(&args, None);
    }
}

/// The subject's webhook calls in `histograms`, merged.
fn calls_of(running: &Running, subject: &Subject, histograms: &BTreeMap<String, Histogram>) -> Histogram {
    let mut merged = Histogram::default();
    for (name, histogram) in histograms {
        let ours = match subject.engine {
            Engine::KyvernoPolicy | Engine::KyvernoCel => name.contains("kyverno"),
            _ => running.webhooks.iter().any(|w| w == name),
        };
        if ours {
            merged.add(histogram, 1.0);
        }
    }
    merged
}

fn delta(after: &BTreeMap<String, Histogram>, before: &BTreeMap<String, Histogram>) -> BTreeMap<String, Histogram> {
    after
        .iter()
        .map(|(name, histogram)| {
            let mut change = histogram.clone();
            if let Some(earlier) = before.get(name) {
                change.add(earlier, -1.0);
            }
            (name.clone(), change)
        })
        .collect()
}

/// Waits until the subject answers through the API server: the broken StatefulSet is refused
/// by each of the three rules (or, for the allow-all webhook, its call is counted). The denial.
async fn until_in_effect(subject: &Subject, running: &Running, api: &Api, broken: &Value) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let before = api.histograms().await;
        let (status, body) = api.dry_run_create(broken).await;
        let called = calls_of(running, subject, &delta(&api.histograms().await, &before)).count > 0.0;
        let refused = COMPARED_RULES.iter().any(|rule| body.contains(rule));
        let ready = match subject.engine {
            Engine::None => status == 201,
            Engine::AllowAll => status == 201 && called,
            _ => status >= 400 && refused && called,
        };
        if ready {
            if status == 201 {
                return Ok("admitted".into());
            }
            // The API server's Status: its message, one line.
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|status| status["message"].as_str().map(str::to_owned))
                .unwrap_or(body);
            return Ok(format!("{status}: {}", message.split_whitespace().collect::<Vec<_>>().join(" ")));
        }
        if Instant::now() > deadline {
            return Err(format!("not in effect within 3 minutes; the broken StatefulSet got {status}: {body}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the API server no longer calls the stopped subject's webhooks.
async fn until_gone(subject: &Subject, running: &Running, api: &Api, core: &Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut probe = core.clone();
    probe["metadata"]["name"] = json!("dx-core-probe");
    while Instant::now() < deadline {
        let before = api.histograms().await;
        let (status, _) = api.dry_run_create(&probe).await;
        if status == 201 && calls_of(running, subject, &delta(&api.histograms().await, &before)).count == 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{}: still called a minute after it was removed", subject.label);
}

/// A subject's runs, its burst times (kubectl, helm install, helm upgrade), RSS and peak RSS.
type Measured = (Subject, Vec<Figures>, Option<[f64; 3]>, f64, f64);

/// One measured run's figures.
#[derive(Clone, Debug)]
struct Figures {
    load: String,
    throughput: f64,
    failed: u64,
    p50: f64,
    p99: f64,
    calls_per_request: f64,
    call_mean: f64,
    call_p50: f64,
    call_p99: f64,
    webhook_cpu_ms: f64,
    apiserver_cpu_ms: f64,
}

async fn measure(
    subject: &Subject,
    running: &Running,
    api: &Api,
    mix: &Arc<[Request]>,
    (connections, pace): (usize, Pace),
) -> Figures {
    load::run(&api.target, Arc::clone(mix), connections, pace, WARMUP).await;
    let cpu = || running.processes.iter().map(Process::cpu_seconds).sum::<f64>();
    let apiserver = api.cluster.apiserver_pid();
    let (before, webhook_cpu, apiserver_cpu) = (api.histograms().await, cpu(), support::cpu_seconds(apiserver));
    let outcome: Outcome = load::run(&api.target, Arc::clone(mix), connections, pace, RUN).await;
    let (webhook_cpu, apiserver_cpu) = (cpu() - webhook_cpu, support::cpu_seconds(apiserver) - apiserver_cpu);
    let calls = calls_of(running, subject, &delta(&api.histograms().await, &before));
    if outcome.failed > 0 {
        eprintln!(
            "warning: {}: {} failed requests, e.g. {:?}",
            subject.label,
            outcome.failed,
            outcome.failures.first()
        );
    }
    let requests = outcome.ok.max(1) as f64;
    Figures {
        load: match pace {
            Pace::Closed => format!("{connections} conn"),
            Pace::Rate(rate) => format!("{rate:.0}/s"),
        },
        throughput: outcome.throughput(),
        failed: outcome.failed,
        p50: outcome.quantile_ms(0.5),
        p99: outcome.quantile_ms(0.99),
        calls_per_request: calls.count / requests,
        call_mean: calls.mean_ms(),
        call_p50: calls.quantile_ms(0.5),
        call_p99: calls.quantile_ms(0.99),
        webhook_cpu_ms: webhook_cpu * 1000.0 / requests,
        apiserver_cpu_ms: apiserver_cpu * 1000.0 / requests,
    }
}

/// The objects of a release-like burst: the seven DX ConfigMaps, then copies of the RingAPI
/// Deployment and the core StatefulSet, `BURST` in all.
fn burst_objects(namespace: &str) -> Vec<Value> {
    let mut objects: Vec<Value> = examples("valid")
        .into_iter()
        .filter(|(file, o)| file == "configmaps.yaml" && o["kind"] == "ConfigMap")
        .map(|(_, o)| o)
        .collect();
    let (core, ring_api) = (example("core.yaml", 0), example("ring-api.yaml", 0));
    let mut n = 0;
    while objects.len() < BURST {
        let mut copy = if n % 2 == 0 { ring_api.clone() } else { core.clone() };
        copy["metadata"]["name"] = json!(format!("{}-{n:03}", copy["metadata"]["name"].as_str().unwrap()));
        copy["spec"]["template"]["metadata"]["annotations"]["bench/revision"] = json!("{{ .Values.revision }}");
        objects.push(copy);
        n += 1;
    }
    for object in &mut objects {
        object["metadata"]["namespace"] = json!(namespace);
    }
    objects
}

/// The namespace of a subject's burst by `kubectl` or `helm`.
fn burst_namespace(subject: &Subject, what: &str) -> String {
    format!("dx-burst-{}-{what}", subject.id)
}

/// Wall times (s) of a burst: `kubectl apply -f` of a directory of `BURST` files, then
/// `helm install` of a chart of the same objects and a `helm upgrade` that changes every workload.
fn burst(api: &Api, subject: &Subject, scratch: &Path) -> [f64; 3] {
    let mut times = [0.0; 3];
    for (what, slot) in [("kubectl", 0), ("helm", 1)] {
        let ns = burst_namespace(subject, what);
        api.apply(&[json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"dx-bench": "true"}}})]);
        let dir = scratch.join(&ns);
        let templates = if what == "helm" { dir.join("templates") } else { dir.clone() };
        std::fs::create_dir_all(&templates).unwrap();
        for (i, object) in burst_objects(&ns).iter().enumerate() {
            let mut text = object.to_string();
            if what == "kubectl" {
                text = text.replace("{{ .Values.revision }}", "1");
            }
            std::fs::write(templates.join(format!("{i:03}.yaml")), text).unwrap();
        }
        if what == "kubectl" {
            let started = Instant::now();
            api.kubectl(&["apply", "-f", &dir.display().to_string()], None);
            times[slot] = started.elapsed().as_secs_f64();
        } else {
            std::fs::write(dir.join("Chart.yaml"), "apiVersion: v2\nname: dx-burst\nversion: 0.1.0\n").unwrap();
            let chart = dir.display().to_string();
            for (revision, slot) in [("1", 1), ("2", 2)] {
                let started = Instant::now();
                let output = api.cluster.helm(&[
                    "upgrade",
                    "--install",
                    "burst",
                    &chart,
                    "--namespace",
                    &ns,
                    "--set",
                    &format!("revision={revision}"),
                ]);
                assert!(output.status.success(), "helm: {}", String::from_utf8_lossy(&output.stderr));
                times[slot] = started.elapsed().as_secs_f64();
            }
        }
    }
    times
}

/// Deletes a burst's objects once its webhook is gone, so that the next subjects (a `--cluster`
/// replica caches every DX object) meet the same cluster. Their namespaces stay: with the
/// controllers stopped, a deleted namespace would never finish terminating.
fn clear_burst(api: &Api, subject: &Subject, scratch: &Path) {
    let listed = scratch.join(burst_namespace(subject, "kubectl")).display().to_string();
    api.kubectl(&["delete", "--wait=false", "-f", &listed], None);
    let output = api.cluster.helm(&["uninstall", "burst", "--namespace", &burst_namespace(subject, "helm")]);
    assert!(output.status.success(), "helm uninstall: {}", String::from_utf8_lossy(&output.stderr));
}

async fn bench(args: &[String]) {
    let mut sections = Vec::new();
    let mut wanted_subjects: Option<Vec<String>> = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--webhooks" {
            let list = rest.next().expect("--webhooks takes a comma-separated list");
            wanted_subjects = Some(list.split(',').map(str::to_owned).collect());
        } else {
            assert!(SECTIONS.contains(&arg.as_str()), "unknown section {arg:?}; sections: {}", SECTIONS.join(", "));
            sections.push(arg.clone());
        }
    }
    let wanted = |section: &str| sections.is_empty() || sections.iter().any(|s| s == section);
    let subjects: Vec<Subject> = SUBJECTS
        .into_iter()
        .filter(|s| wanted_subjects.as_ref().is_none_or(|w| w.iter().any(|id| id == s.id)))
        .collect();
    if let Some(list) = &wanted_subjects {
        for id in list {
            assert!(
                SUBJECTS.iter().any(|s| s.id == id),
                "unknown webhook {id:?}; webhooks: {}",
                SUBJECTS.map(|s| s.id).join(", ")
            );
        }
    }
    let started = Instant::now();
    println!("dx-admission API-server benchmark — {}", machine());
    let bins = cluster::ensure_binaries().expect("the cluster's binaries build");
    let kyverno = if subjects.iter().any(|s| matches!(s.engine, Engine::KyvernoPolicy | Engine::KyvernoCel)) {
        kyverno_binary()
    } else {
        Err("not asked for".into())
    };
    if let Err(why) = &kyverno {
        eprintln!("Kyverno is not measured: {why}");
    }
    eprintln!("starting the cluster...");
    let mut cluster = cluster::Cluster::start(bins).expect("the cluster starts");
    // Admission is what is measured: with the controllers and nodes stopped, what is created
    // is stored, and no pod starts (the workloads keep their replicas, which the DX schemas check).
    cluster.stop_controllers();
    let path = |name: &str| cluster.dir.path().join(name);
    let read = |name: &str| std::fs::read_to_string(path(name)).expect("the cluster's PKI");
    let addr = cluster.server.trim_start_matches("https://").parse().expect("the API server's address");
    let target = Target::with_identity(addr, &read("ca.crt"), Some((&read("admin.crt"), &read("admin.key"))));
    let api = Api { cluster, target };
    let tls = Tls::with_names(&[&format!("{SERVICE}.{NAMESPACE}.svc")]);
    let scratch = tempfile::Builder::new().prefix("dx-apiserver-bench-").tempdir().expect("scratch directory");

    api.apply(&[
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": {"dx-bench": "true"}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {"type": "ExternalName", "externalName": "127.0.0.1"}}),
    ]);
    let config_maps: Vec<Value> = burst_objects(NAMESPACE).into_iter().filter(|o| o["kind"] == "ConfigMap").collect();
    api.apply(&config_maps);
    let (core, ring_api) = (example("core.yaml", 0), example("ring-api.yaml", 0));
    api.apply(&[core.clone(), ring_api.clone()]);
    let kyverno = match kyverno {
        Ok(binary) => prepare_kyverno(&api).map(|()| binary),
        Err(why) => Err(why),
    };
    let requests: Arc<[Request]> = Arc::from(mix(&core, &ring_api));
    let broken_all = broken(&core, &COMPARED_RULES);
    eprintln!("ready after {:.0}s", started.elapsed().as_secs_f64());

    let mut results: Vec<Measured> = Vec::new();
    'subjects: for subject in &subjects {
        eprintln!("== {}", subject.label);
        let mut running = match start(subject, &api, &tls, scratch.path(), &kyverno).await {
            Ok(running) => running,
            Err(why) => {
                eprintln!("{}: not measured: {why}", subject.label);
                continue;
            }
        };
        match until_in_effect(subject, &running, &api, &broken_all).await {
            Ok(denial) => println!("{}: the broken StatefulSet: {denial}", subject.label),
            Err(why) => {
                eprintln!("{}: {why}", subject.label);
                let log =
                    std::fs::read_to_string(scratch.path().join(format!("{}.log", subject.id))).unwrap_or_default();
                eprintln!("{}", log.lines().rev().take(20).collect::<Vec<_>>().join("\n"));
                drop_webhooks(&api, &mut running);
                continue;
            }
        }
        // Each rule alone is refused with its id by each engine that enforces them.
        if !matches!(subject.engine, Engine::None | Engine::AllowAll) {
            for rule in COMPARED_RULES {
                let (status, body) = api.dry_run_create(&broken(&core, &[rule])).await;
                if status < 400 || !body.contains(rule) {
                    eprintln!("{}: a StatefulSet breaking only {rule} got {status}: {body}", subject.label);
                    drop_webhooks(&api, &mut running);
                    continue 'subjects;
                }
            }
            println!("{}: each of {} alone is refused with its rule id", subject.label, COMPARED_RULES.join(", "));
        }
        // Every request of the mix gets its answer (201 created, 200 updated) from every webhook.
        for request in requests.iter() {
            if let Err(why) = load::answer(&api.target, request).await {
                eprintln!("{}: {} {} is not admitted: {why}", subject.label, request.method, request.path);
                drop_webhooks(&api, &mut running);
                continue 'subjects;
            }
        }
        let mut figures = Vec::new();
        if wanted("calls") {
            let loads = CONCURRENCY
                .map(|c| (c, Pace::Closed))
                .into_iter()
                .chain(RATES.map(|r| (OPEN_LOOP_CONNECTIONS, Pace::Rate(r))));
            for load in loads {
                figures.push(measure(subject, &running, &api, &requests, load).await);
            }
        }
        let rss = running.processes.iter().map(|p| p.memory_mib("VmRSS")).sum::<f64>();
        let peak = running.processes.iter().map(|p| p.memory_mib("VmHWM")).sum::<f64>();
        let times = wanted("burst").then(|| burst(&api, subject, scratch.path()));
        drop_webhooks(&api, &mut running);
        until_gone(subject, &running, &api, &core).await;
        if times.is_some() {
            clear_burst(&api, subject, scratch.path());
        }
        results.push((*subject, figures, times, rss, peak));
    }
    report(&results, started.elapsed());
}

fn report(results: &[Measured], elapsed: Duration) {
    let floor: Option<&Vec<Figures>> =
        results.iter().find(|(s, ..)| s.id == "allow-all").map(|(_, figures, ..)| figures);
    println!(
        "\n## Through the API server: dry-run creates and updates of the DX StatefulSet and Deployment ({RUN:?} each)"
    );
    println!(
        "{:<40} {:>7} {:>8} {:>6} {:>8} {:>8} {:>6} {:>9} {:>8} {:>8} {:>9} {:>9} {:>8}",
        "webhook",
        "load",
        "req/s",
        "×allow",
        "p50 ms",
        "p99 ms",
        "calls",
        "call ms",
        "call p50",
        "call p99",
        "hook CPU",
        "API CPU",
        "RSS MiB"
    );
    for (subject, figures, _, rss, _) in results {
        for (i, f) in figures.iter().enumerate() {
            let ratio = floor.and_then(|floor| floor.get(i)).map_or(f64::NAN, |a| f.throughput / a.throughput);
            println!(
                "{:<40} {:>7} {:>8.0} {:>6.2} {:>8.2} {:>8.2} {:>6.2} {:>9.2} {:>8.2} {:>8.2} {:>9.2} {:>9.2} {:>8.0}",
                subject.label,
                f.load,
                f.throughput,
                ratio,
                f.p50,
                f.p99,
                f.calls_per_request,
                f.call_mean,
                f.call_p50,
                f.call_p99,
                f.webhook_cpu_ms,
                f.apiserver_cpu_ms,
                rss
            );
            if f.failed > 0 {
                println!("{:<40} {:>7} {} failed", "", "", f.failed);
            }
        }
    }
    println!("(call ms: the API server's own mean webhook call time; call p50/p99 interpolated in its buckets;");
    println!(" hook CPU and API CPU: CPU ms per request of the webhook's processes and of the API server)");

    // The webhook's time above the floor, against Kyverno's, at the same load.
    if let Some(floor) = floor {
        for kyverno_id in ["kyverno-policy", "kyverno-cel"] {
            let Some((_, kyverno, ..)) = results.iter().find(|(s, ..)| s.id == kyverno_id) else { continue };
            println!("\n## Above the allow-all floor, as a share of {kyverno_id}'s (same load; lower is better)");
            println!(
                "{:<40} {:>7} {:>12} {:>12} {:>10} {:>12}",
                "webhook", "load", "mean above", "p99 above", "raw mean", "CPU/request"
            );
            for (subject, figures, ..) in results.iter().filter(|(s, ..)| s.id.starts_with("dx-")) {
                for ((f, a), k) in figures.iter().zip(floor).zip(kyverno) {
                    let above = |x: f64, floor: f64| (x - floor).max(0.0);
                    println!(
                        "{:<40} {:>7} {:>12.3} {:>12.3} {:>10.3} {:>12.3}",
                        subject.label,
                        f.load,
                        above(f.call_mean, a.call_mean) / above(k.call_mean, a.call_mean),
                        above(f.p99, a.p99) / above(k.p99, a.p99),
                        f.call_mean / k.call_mean,
                        f.webhook_cpu_ms / k.webhook_cpu_ms,
                    );
                }
            }
        }
    }

    if results.iter().any(|(_, _, times, ..)| times.is_some()) {
        println!(
            "\n## A burst like a release: {BURST} objects (7 ConfigMaps, Deployments and StatefulSets), wall time"
        );
        println!(
            "{:<40} {:>14} {:>14} {:>14} {:>10} {:>10}",
            "webhook", "kubectl -f s", "helm install s", "helm upgrade s", "RSS MiB", "peak MiB"
        );
        for (subject, _, times, rss, peak) in results {
            if let Some([apply, install, upgrade]) = times {
                println!(
                    "{:<40} {apply:>14.2} {install:>14.2} {upgrade:>14.2} {rss:>10.0} {peak:>10.0}",
                    subject.label
                );
            }
        }
    }

    let curves: Vec<(String, Vec<Point>)> = results
        .iter()
        .map(|(subject, figures, ..)| {
            let points = figures
                .iter()
                .filter(|f| f.load.ends_with("/s"))
                .map(|f| Point { rate: f.throughput, p50: f.p50, p99: f.p99, p999: f.p99 })
                .collect();
            (format!("{} (through the API server)", subject.label), points)
        })
        .filter(|(_, points): &(String, Vec<Point>)| !points.is_empty())
        .collect();
    if !curves.is_empty() {
        let out = repo().join("target/apiserver-bench");
        std::fs::create_dir_all(&out).expect("output directory");
        match plot::latency(&out.join("latency.png"), &curves) {
            Ok(()) => println!("\nplot: {}", out.join("latency.png").display()),
            Err(why) => println!("\nno plot: {why}"),
        }
    }
    println!("\nwhole benchmark: {:.0}s", elapsed.as_secs_f64());
}
