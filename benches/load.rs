//! The load benchmark: dx-admission's release server driven over keep-alive HTTPS on loopback
//! with real-format AdmissionReviews, side by side in one run with
//! - a baseline: a minimal axum + rustls endpoint answering a fixed allowed review (the upper
//!   bound for this stack on this machine), and
//! - a Go peer: OPA serving dx-admission's workload rules as Rego (`benches/peer/dx.rego`).
//!
//! Prints a table (every figure also as a ratio to the baseline) and writes a PNG plot of latency
//! against load to `target/load-bench/latency.png`.
//!
//! Run: `cargo bench --bench load` (about 10 minutes; the first run also builds the kube-apiserver,
//! etcd and OPA from the Go module proxy, cached like the end-to-end suite's binaries).
//! Soak: `cargo bench --bench load -- soak [--minutes 10] [--rate 400] [--config-maps 10000]`.
//! Sections alone: `cargo bench --bench load -- reports` (any of [`SECTIONS`]).

#[path = "../tests/e2e/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::load::{self, Outcome, Pace, Request, Target};
use common::{examples, review};
use serde_json::{Value, json};
use support::{Point, Process, Tls, free_port, machine, plot, repo, start_baseline, start_dx};

/// The allocator the server runs with, for the load generator and the baseline too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keep-alive connections per load run: enough to keep both cores busy.
const CONNECTIONS: usize = 32;
const WARMUP: Duration = Duration::from_secs(1);
const SATURATION_RUN: Duration = Duration::from_secs(3);
const RATE_RUN: Duration = Duration::from_secs(4);
/// Fractions of each subject's own saturation rate at which latency is measured.
const LOADS: [f64; 3] = [0.25, 0.5, 0.75];
const OPA_RELEASE: &str = "v1.22.0";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    match args.first().map(String::as_str) {
        Some("baseline-server") => runtime().block_on(support::baseline::serve(&args[1..])),
        Some("soak") => runtime().block_on(soak(&args[1..])),
        _ => runtime().block_on(bench(&args)),
    }
}

/// Builds OPA from its Go module (once, cached) and serves the Rego rules; `Err` says why not.
async fn start_opa(tls: &Tls) -> Result<Process, String> {
    let cache = std::env::var_os("DX_E2E_CACHE").map_or_else(|| repo().join(".cache/e2e"), PathBuf::from);
    let binary = cache.join(format!("opa-{OPA_RELEASE}")).join("opa");
    if !binary.exists() {
        eprintln!("building OPA {OPA_RELEASE} from the Go module proxy (once)...");
        let output = Command::new("go")
            .current_dir(repo().join("benches/peer"))
            .args(["build", "-trimpath", "-ldflags=-s -w", "-o"])
            .arg(&binary)
            .arg("github.com/open-policy-agent/opa")
            .output()
            .map_err(|e| format!("go: {e}"))?;
        if !output.status.success() {
            return Err(format!("go build of OPA failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
    }
    let port = free_port();
    let child = Command::new(&binary)
        .args(["run", "--server", "--disable-telemetry", "--log-level=error"])
        .arg(format!("--addr=127.0.0.1:{port}"))
        .arg(format!("--tls-cert-file={}", tls.path("tls.crt").display()))
        .arg(format!("--tls-private-key-file={}", tls.path("tls.key").display()))
        .arg(repo().join("benches/peer/dx.rego"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("opa: {e}"))?;
    Ok(Process { name: format!("OPA {OPA_RELEASE}"), child, addr: SocketAddr::from(([127, 0, 0, 1], port)) })
}

/// Sends `request` until a correct answer comes (the subject is up), at most 60 s.
async fn await_answer(target: &Target, request: &Request) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match load::answer(target, request).await {
            Ok(_) => return Ok(()),
            Err(why) if Instant::now() > deadline => return Err(why),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The workloads of the benchmark, as reviews in the API server's envelope.
struct Workloads {
    sts_allowed: Value,
    /// The core StatefulSet's create as the API server really sent it (defaults, managedFields).
    sts_captured: Value,
    sts_denied: Value,
    deployment: Value,
    config_map: Value,
    big_config_map: Value,
    foreign: Value,
}

fn example(file: &str, index: usize) -> Value {
    examples("valid").into_iter().filter(|(name, _)| name == file).nth(index).expect("example").1
}

/// The image-processor ConfigMap (its schema warns on unknown keys) padded to `bytes` with
/// unknown keys of 100 KiB at most: a stuffed ConfigMap of the size a user may reach.
fn padded_config_map(bytes: usize) -> Value {
    let mut map = example("configmaps.yaml", 6);
    assert_eq!(map["metadata"]["name"], "dx-image-processor-config");
    let base = serde_json::to_vec(&map).expect("JSON").len();
    let mut missing = bytes.saturating_sub(base);
    let mut n = 0;
    while missing > 32 {
        let chunk = missing.min(100 * 1024) - 24;
        map["data"][format!("extra.blob.{n:03}")] = json!("x".repeat(chunk));
        missing = missing.saturating_sub(chunk + 24);
        n += 1;
    }
    map
}

impl Workloads {
    fn new() -> Self {
        let core = example("core.yaml", 0);
        let mut broken = core.clone();
        let container = &mut broken["spec"]["template"]["spec"]["containers"][0];
        container["image"] = json!("hcl/dx/core:latest");
        container.as_object_mut().expect("container").remove("readinessProbe");
        let mut foreign = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "namespace": "dx"},
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nMIIBdz...\n-----END CERTIFICATE-----\n"}
        });
        foreign["metadata"]["labels"] = json!({"app": "other"});
        Self {
            sts_allowed: review("CREATE", Some(&core), None),
            sts_captured: common::fixture("e2e/01-create-statefulset-dx-core.json"),
            sts_denied: review("CREATE", Some(&broken), None),
            deployment: review("CREATE", Some(&example("ring-api.yaml", 0)), None),
            config_map: review("CREATE", Some(&example("configmaps.yaml", 1)), None),
            big_config_map: review("CREATE", Some(&padded_config_map(900 * 1024)), None),
            foreign: review("CREATE", Some(&foreign), None),
        }
    }

    /// (label, request) for every workload on `path`.
    fn all(&self, path: &'static str) -> Vec<(&'static str, Request)> {
        vec![
            ("StatefulSet, allowed", Request::review(path, &self.sts_allowed, true)),
            ("StatefulSet, denied", Request::review(path, &self.sts_denied, path != "/validate")),
            ("Deployment", Request::review(path, &self.deployment, true)),
            ("ConfigMap, 1 KiB", Request::review(path, &self.config_map, true)),
            ("ConfigMap, 900 KiB", Request::review(path, &self.big_config_map, true)),
            ("non-DX ConfigMap", Request::review(path, &self.foreign, true)),
        ]
    }
}

/// A subject's figures at saturation.
#[derive(Clone, Debug)]
struct Saturation {
    throughput: f64,
    cpu_us_per_review: f64,
    p50_ms: f64,
}

async fn saturate(process: &Process, target: &Target, mix: &[Request]) -> (Saturation, Outcome) {
    let mix: Arc<[Request]> = Arc::from(mix.to_vec());
    load::run(target, Arc::clone(&mix), CONNECTIONS, Pace::Closed, WARMUP).await;
    let cpu = process.cpu_seconds();
    let outcome = load::run(target, mix, CONNECTIONS, Pace::Closed, SATURATION_RUN).await;
    let cpu = process.cpu_seconds() - cpu;
    let figures = Saturation {
        throughput: outcome.throughput(),
        cpu_us_per_review: cpu * 1e6 / outcome.ok.max(1) as f64,
        p50_ms: outcome.quantile_ms(0.5),
    };
    (figures, outcome)
}

fn check(name: &str, outcome: &Outcome) {
    if outcome.failed > 0 {
        eprintln!("warning: {name}: {} failed answers, e.g. {:?}", outcome.failed, outcome.failures.first());
    }
}

/// One subject of the side-by-side comparison.
struct Subject<'a> {
    label: String,
    process: &'a Process,
    mix: Vec<Request>,
}

/// Latency at fixed fractions of a saturation rate.
async fn latency_curve(target: &Target, mix: &[Request], saturation: f64) -> Vec<Point> {
    let mut points = Vec::new();
    for fraction in LOADS {
        let rate = saturation * fraction;
        let outcome = load::run(target, Arc::from(mix.to_vec()), CONNECTIONS, Pace::Rate(rate), RATE_RUN).await;
        check(&format!("rate {rate:.0}/s"), &outcome);
        points.push(Point {
            rate,
            p50: outcome.quantile_ms(0.5),
            p99: outcome.quantile_ms(0.99),
            p999: outcome.quantile_ms(0.999),
        });
    }
    points
}

/// Sequential reviews on one connection: (p50, p99) in ms.
async fn unloaded(target: &Target, request: &Request, duration: Duration) -> (f64, f64) {
    let mix: Arc<[Request]> = Arc::from(vec![request.clone()]);
    load::run(target, Arc::clone(&mix), 1, Pace::Closed, Duration::from_millis(300)).await;
    let outcome = load::run(target, mix, 1, Pace::Closed, duration).await;
    check("sequential", &outcome);
    (outcome.quantile_ms(0.5), outcome.quantile_ms(0.99))
}

/// A copy of the bundled schemas with `versions` versions (v2 repeated as v3, v4, ...).
fn schema_set(root: &Path, versions: usize) -> (PathBuf, usize) {
    let dir = root.join(format!("schemas-{versions}"));
    let source = repo().join("schemas");
    copy_dir(&source, &dir);
    let mut index = std::fs::read_to_string(source.join("index.yaml")).expect("index.yaml");
    for n in 3..=versions {
        copy_dir(&source.join("v2"), &dir.join(format!("v{n}")));
        index.push_str(&format!("  - name: v{n}\n    notes: copy of v2 for the load benchmark\n"));
    }
    std::fs::write(dir.join("index.yaml"), index).expect("index written");
    let files = count_files(&dir, "json");
    (dir, files)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("directory");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copy");
        }
    }
}

fn count_files(dir: &Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .map(|p| if p.is_dir() { count_files(&p, ext) } else { usize::from(p.extension().is_some_and(|e| e == ext)) })
        .sum()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Creates ConfigMaps `dx-cached-<from..to>` (8 keys of 200 bytes, like a small app config).
async fn create_config_maps(client: &kube::Client, from: usize, to: usize) {
    use futures_util::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), "cache");
    let params = kube::api::PostParams::default();
    futures_util::stream::iter(from..to)
        .for_each_concurrent(48, |i| {
            let (api, params) = (api.clone(), params.clone());
            async move {
                let data: serde_json::Map<String, Value> =
                    (0..8).map(|k| (format!("key.{k}"), json!(format!("{i}-{k}-{}", "v".repeat(200))))).collect();
                let map: ConfigMap =
                    serde_json::from_value(json!({"metadata": {"name": format!("dx-cached-{i:05}")}, "data": data}))
                        .expect("ConfigMap");
                for attempt in 0..5 {
                    match api.create(&params, &map).await {
                        Ok(_) => return,
                        Err(kube::Error::Api(e)) if e.code == 409 => return,
                        Err(error) if attempt == 4 => panic!("creating ConfigMap {i}: {error}"),
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            }
        })
        .await;
}

/// Namespaces `dx-report-<from>` .. `<to>`, each with the 13 example objects and 87 more RingAPI
/// Deployments (every tenth with an unpinned image, denied by `image-pinned`), all at 0 replicas.
async fn create_dx_namespaces(client: &kube::Client, from: usize, to: usize) {
    use futures_util::StreamExt;
    use kube::api::{DynamicObject, PostParams};
    let examples: Vec<Value> = examples("valid").into_iter().map(|(_, object)| object).collect();
    let ring_api =
        examples.iter().find(|o| o["metadata"]["name"] == "dx-ring-api").expect("the RingAPI example").clone();
    let mut objects = Vec::new();
    for n in from..to {
        let namespace = format!("dx-report-{n:02}");
        objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}));
        let mut own: Vec<Value> = examples.iter().filter(|o| o["kind"] != "PersistentVolumeClaim").cloned().collect();
        for i in 0..87 {
            let mut copy = ring_api.clone();
            copy["metadata"]["name"] = json!(format!("dx-ring-api-{i:02}"));
            if i % 10 == 0 {
                copy["spec"]["template"]["spec"]["containers"][0]["image"] = json!("hcl/dx/ring-api:latest");
            }
            own.push(copy);
        }
        for object in &mut own {
            object["metadata"]["namespace"] = json!(namespace);
            if object["spec"]["replicas"].is_number() {
                object["spec"]["replicas"] = json!(0);
            }
        }
        objects.extend(own);
    }
    let (namespaces, namespaced): (Vec<Value>, Vec<Value>) =
        objects.into_iter().partition(|o| o["kind"] == "Namespace");
    for batch in [namespaces, namespaced] {
        futures_util::stream::iter(batch)
            .for_each_concurrent(32, |object| {
                let client = client.clone();
                async move {
                    let object: DynamicObject = serde_json::from_value(object).expect("an object");
                    let types = object.types.clone().expect("apiVersion and kind");
                    let (group, version) = types.api_version.rsplit_once('/').unwrap_or(("", &types.api_version));
                    let gvk = kube::api::GroupVersionKind::gvk(group, version, &types.kind);
                    let plural = format!("{}s", types.kind.to_lowercase());
                    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, &plural);
                    let api: kube::Api<DynamicObject> = match &object.metadata.namespace {
                        Some(namespace) => kube::Api::namespaced_with(client, namespace, &resource),
                        None => kube::Api::all_with(client, &resource),
                    };
                    match api.create(&PostParams::default(), &object).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 409 => {}
                        Err(error) => panic!("creating {} {:?}: {error}", types.kind, object.metadata.name),
                    }
                }
            })
            .await;
    }
}

/// dx-admission in `--cluster` mode with a 5 s report interval, its log lines of finished scans
/// sent to the receiver.
fn start_reporting(tls: &Tls, kubeconfig: &Path) -> (Process, std::sync::mpsc::Receiver<Value>) {
    use std::io::BufRead;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dx-admission"))
        .arg("serve")
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--metrics-listen=127.0.0.1:{}", free_port()))
        .arg(format!("--tls-cert={}", tls.path("tls.crt").display()))
        .arg(format!("--tls-key={}", tls.path("tls.key").display()))
        .arg(format!("--schemas={}", repo().join("schemas").display()))
        .arg("--cluster")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--checksum-key-file={}", tls.path("checksum.key").display()))
        .arg("--identity=report-benchmark")
        .arg("--lease-name=report-benchmark")
        .arg("--report-interval=5s")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dx-admission starts");
    let stderr = child.stderr.take().expect("stderr");
    let (sender, scans) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(value) = serde_json::from_str::<Value>(&line) else { continue };
            if value["level"] == "WARN" {
                eprintln!("reporting replica: {line}");
            }
            if value["message"] == "existing DX objects judged" && sender.send(value).is_err() {
                return;
            }
        }
    });
    (Process { name: "dx-admission".into(), child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }, scans)
}

/// The next finished scan's log line (at most 10 minutes).
fn next_scan(scans: &std::sync::mpsc::Receiver<Value>) -> Value {
    scans.recv_timeout(Duration::from_secs(600)).expect("a scan finishes within 10 minutes")
}

/// The sections of the benchmark; naming some on the command line runs only those.
const SECTIONS: [&str; 7] = ["saturation", "workloads", "latency", "size", "schemas", "cache", "reports"];

async fn bench(args: &[String]) {
    for arg in args {
        assert!(SECTIONS.contains(&arg.as_str()), "unknown section {arg:?}; sections: {}", SECTIONS.join(", "));
    }
    let wanted = |section: &str| args.is_empty() || args.iter().any(|a| a == section);
    let started = Instant::now();
    let out = repo().join("target/load-bench");
    std::fs::create_dir_all(&out).expect("output directory");
    let tls = Tls::new();
    let workloads = Workloads::new();
    println!("dx-admission load benchmark — {}", machine());

    // A real API server, so /mutate answers from a synced cache of the referenced ConfigMaps.
    eprintln!("starting kube-apiserver...");
    let bins = cluster::ensure_binaries().expect("kube-apiserver, etcd and kubectl build");
    let api = cluster::Cluster::start(bins).expect("kube-apiserver starts");
    let kubectl = |args: &[&str], stdin: Option<&str>| {
        let output = api.kubectl(args, stdin);
        assert!(output.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    kubectl(&["create", "namespace", "dx"], None);
    kubectl(&["create", "namespace", "cache"], None);
    let config_maps = std::fs::read_to_string(repo().join("examples/valid/configmaps.yaml")).expect("examples");
    kubectl(&["apply", "-f", "-"], Some(&config_maps));

    let baseline = start_baseline(&tls, false).await;
    let (dx, _) = start_dx(&tls, &repo().join("schemas"), Some(&api.kubeconfig)).await;
    let opa = start_opa(&tls).await;
    let (baseline_target, dx_target) = (tls.target(baseline.addr), tls.target(dx.addr));
    let fixed = Request { uid: None, ..Request::review("/validate", &workloads.sts_allowed, true) };
    await_answer(&baseline_target, &fixed).await.expect("baseline answers");
    let validate = workloads.all("/validate");
    let mutate = workloads.all("/mutate");
    await_answer(&dx_target, &validate[0].1).await.expect("dx-admission answers");
    let opa = match opa {
        Ok(process) => {
            let target = tls.target(process.addr);
            let request = Request::review("/", &workloads.sts_allowed, true);
            match await_answer(&target, &request).await {
                Ok(()) => Ok((process, target)),
                Err(why) => Err(format!("OPA does not answer correctly: {why}")),
            }
        }
        Err(why) => Err(why),
    };
    // The mutate path must be answering from the cache: its first answer carries a patch.
    let patched = once_body(&dx_target, &mutate[0].1).await;
    assert!(patched.contains("\"patch\""), "/mutate of the DX StatefulSet gives no patch: {patched}");

    // 1. Saturation, side by side: two interleaved rounds, the better of each subject's two.
    let captured = Request::review("/validate", &workloads.sts_captured, true);
    let captured_bytes = captured.body.len();
    let mut subjects = vec![
        Subject { label: "baseline (fixed answer)".into(), process: &baseline, mix: vec![fixed.clone()] },
        Subject {
            label: format!("baseline, captured {captured_bytes} B body"),
            process: &baseline,
            mix: vec![Request { uid: None, ..captured.clone() }],
        },
        Subject { label: "validate StatefulSet".into(), process: &dx, mix: vec![validate[0].1.clone()] },
        Subject {
            label: format!("validate StatefulSet, captured {captured_bytes} B"),
            process: &dx,
            mix: vec![captured.clone()],
        },
        Subject { label: "mutate StatefulSet (cache hit)".into(), process: &dx, mix: vec![mutate[0].1.clone()] },
        Subject {
            label: "validate mix (6 workloads)".into(),
            process: &dx,
            mix: validate.iter().map(|(_, r)| r.clone()).collect(),
        },
    ];
    if let Ok((process, _)) = &opa {
        subjects.push(Subject {
            label: format!("{} validate StatefulSet", process.name),
            process,
            mix: vec![Request::review("/", &workloads.sts_allowed, true)],
        });
        subjects.push(Subject {
            label: format!("{} validate StatefulSet, captured {captured_bytes} B", process.name),
            process,
            mix: vec![Request::review("/", &workloads.sts_captured, true)],
        });
    }
    let targets: Vec<Target> = subjects.iter().map(|s| tls.target(s.process.addr)).collect();
    let mut best: Vec<Option<Saturation>> = vec![None; subjects.len()];
    // The later sections give ratios to these figures.
    let rounds = if wanted("saturation") || wanted("workloads") || wanted("latency") { 2 } else { 0 };
    for round in 0..rounds {
        for (i, subject) in subjects.iter().enumerate() {
            eprintln!("saturation round {}: {}", round + 1, subject.label);
            let (figures, outcome) = saturate(subject.process, &targets[i], &subject.mix).await;
            check(&subject.label, &outcome);
            if best[i].as_ref().is_none_or(|b| b.throughput < figures.throughput) {
                best[i] = Some(figures);
            }
        }
    }
    let unmeasured = Saturation { throughput: f64::NAN, cpu_us_per_review: f64::NAN, p50_ms: f64::NAN };
    let best: Vec<Saturation> = best.into_iter().map(|b| b.unwrap_or_else(|| unmeasured.clone())).collect();
    let base = best[0].clone();
    if rounds > 0 {
        println!(
            "\n## Saturation ({CONNECTIONS} keep-alive connections, closed loop, best of 2 rounds of {SATURATION_RUN:?})"
        );
        println!(
            "{:<40} {:>11} {:>8} {:>12} {:>8} {:>10}",
            "subject", "reviews/s", "× base", "CPU µs/rev", "× base", "p50 ms"
        );
        for (subject, figures) in subjects.iter().zip(&best) {
            println!(
                "{:<40} {:>11.0} {:>8.2} {:>12.1} {:>8.2} {:>10.2}",
                subject.label,
                figures.throughput,
                figures.throughput / base.throughput,
                figures.cpu_us_per_review,
                figures.cpu_us_per_review / base.cpu_us_per_review,
                figures.p50_ms
            );
        }
        // The captured body against the baseline reading the same body, and against OPA.
        let of = |prefix: &str| {
            subjects.iter().zip(&best).find(|(s, _)| s.label.starts_with(prefix) && s.label.contains("captured"))
        };
        if let (Some((_, dx)), Some((_, same_body))) = (of("validate StatefulSet"), of("baseline")) {
            println!(
                "captured body: validate / baseline {:.2} (throughput), CPU per review {:.1} µs vs {:.1} µs",
                dx.throughput / same_body.throughput,
                dx.cpu_us_per_review,
                same_body.cpu_us_per_review
            );
            if let Some((_, opa)) = of("OPA") {
                println!("captured body: validate / OPA {:.2} (throughput)", dx.throughput / opa.throughput);
            }
        }
    }

    // 2. Every workload on both paths.
    if wanted("workloads") {
        println!("\n## Per workload (saturation, {SATURATION_RUN:?} each)");
        println!(
            "{:<24} {:>12} {:>8} {:>12} {:>8} {:>14}",
            "workload", "validate/s", "× base", "mutate/s", "× base", "mutate cost ×"
        );
        for ((label, v), (_, m)) in validate.iter().zip(&mutate) {
            let (vf, vo) = saturate(&dx, &dx_target, std::slice::from_ref(v)).await;
            let (mf, mo) = saturate(&dx, &dx_target, std::slice::from_ref(m)).await;
            check(label, &vo);
            check(label, &mo);
            println!(
                "{label:<24} {:>12.0} {:>8.2} {:>12.0} {:>8.2} {:>14.2}",
                vf.throughput,
                vf.throughput / base.throughput,
                mf.throughput,
                mf.throughput / base.throughput,
                vf.throughput / mf.throughput
            );
        }
    }

    // 3. Latency at fixed rates (open loop, from when each request was due).
    if wanted("latency") {
        println!("\n## Latency at fixed rates (open loop, {RATE_RUN:?} each; % of each subject's own saturation)");
        println!(
            "{:<40} {:>6} {:>10} {:>9} {:>9} {:>9}",
            "subject", "load", "reviews/s", "p50 ms", "p99 ms", "p99.9 ms"
        );
        let mut curves = Vec::new();
        for (i, subject) in subjects.iter().enumerate() {
            if subject.label.starts_with("validate mix") {
                continue;
            }
            eprintln!("latency: {}", subject.label);
            let points = latency_curve(&targets[i], &subject.mix, best[i].throughput).await;
            for (fraction, Point { rate, p50, p99, p999 }) in LOADS.iter().zip(&points) {
                println!(
                    "{:<40} {:>5.0}% {rate:>10.0} {p50:>9.2} {p99:>9.2} {p999:>9.2}",
                    subject.label,
                    fraction * 100.0
                );
            }
            curves.push((subject.label.clone(), points));
        }
        // The mutate path against the validate path on the same object, one review at a time.
        let (v50, v99) = unloaded(&dx_target, &validate[0].1, Duration::from_secs(3)).await;
        let (m50, m99) = unloaded(&dx_target, &mutate[0].1, Duration::from_secs(3)).await;
        println!(
            "one connection, sequential: validate StatefulSet p50 {v50:.3} ms p99 {v99:.3} ms; mutate (cache hit) \
             p50 {m50:.3} ms p99 {m99:.3} ms; mutate/validate p50 {:.2}, p99 {:.2}",
            m50 / v50,
            m99 / v99
        );
        let png = out.join("latency.png");
        match plot::latency(&png, &curves) {
            Ok(()) => println!("plot: {}", png.display()),
            Err(error) => println!("plot not written: {error}"),
        }
    }

    // 4. Latency against ConfigMap size, one connection, next to the baseline reading the same body.
    if wanted("size") {
        println!("\n## Latency against ConfigMap size (one connection, sequential)");
        println!(
            "{:<10} {:>10} {:>10} {:>12} {:>12} {:>8}",
            "size", "p50 ms", "p99 ms", "base p50", "base p99", "× base"
        );
        for kib in [1usize, 10, 100, 300, 900] {
            let body = review("CREATE", Some(&padded_config_map(kib * 1024)), None);
            let request = Request::review("/validate", &body, true);
            let fixed = Request { uid: None, ..request.clone() };
            let (p50, p99) = unloaded(&dx_target, &request, Duration::from_secs(2)).await;
            let (b50, b99) = unloaded(&baseline_target, &fixed, Duration::from_secs(2)).await;
            println!("{:<10} {p50:>10.3} {p99:>10.3} {b50:>12.3} {b99:>12.3} {:>8.2}", format!("{kib} KiB"), p50 / b50);
        }
    }

    // 5. Schema versions loaded: start-up to ready, memory and latency.
    if wanted("schemas") {
        println!("\n## Schema versions loaded (no cluster; start-up = spawn to /readyz 200, median of 5)");
        println!(
            "{:<9} {:>7} {:>12} {:>10} {:>10} {:>10}",
            "versions", "files", "start-up ms", "RSS MiB", "p50 ms", "p99 ms"
        );
        let scratch = tempfile::Builder::new().prefix("dx-load-schemas-").tempdir().expect("temporary directory");
        for versions in [2usize, 8, 32] {
            let (dir, files) = schema_set(scratch.path(), versions);
            let mut startups = Vec::new();
            for _ in 0..4 {
                let (process, took) = start_dx(&tls, &dir, None).await;
                startups.push(took.as_secs_f64() * 1000.0);
                drop(process);
            }
            let (process, took) = start_dx(&tls, &dir, None).await;
            startups.push(took.as_secs_f64() * 1000.0);
            let (p50, p99) = unloaded(&tls.target(process.addr), &validate[0].1, Duration::from_secs(2)).await;
            println!(
                "{versions:<9} {files:>7} {:>12.1} {:>10.1} {p50:>10.3} {p99:>10.3}",
                median(startups),
                process.memory_mib("VmRSS")
            );
        }
    }

    // 6. Memory against cached ConfigMaps (a real API server's, listed and watched).
    if wanted("cache") {
        println!("\n## Memory against ConfigMaps cached for /mutate (8 keys x 200 B each)");
        println!("{:<12} {:>10} {:>10} {:>14} {:>14}", "ConfigMaps", "RSS MiB", "peak MiB", "create s", "sync s");
        let client = common_client(&api.kubeconfig).await;
        let mut created = 0;
        for count in [0usize, 1_000, 10_000, 50_000] {
            let creating = Instant::now();
            create_config_maps(&client, created, count).await;
            created = count;
            let create_s = creating.elapsed().as_secs_f64();
            let (process, took) = start_dx(&tls, &repo().join("schemas"), Some(&api.kubeconfig)).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            println!(
                "{count:<12} {:>10.1} {:>10.1} {create_s:>14.1} {:>14.2}",
                process.memory_mib("VmRSS"),
                process.memory_mib("VmHWM"),
                took.as_secs_f64()
            );
        }
    }

    // 7. The background evaluation: PolicyReports of existing DX objects, bounded by namespace.
    if wanted("reports") {
        println!("\n## Background evaluation: PolicyReports of existing DX objects (100 per namespace, 9 denied)");
        println!("(a fresh replica per row; the first scan writes the reports a previous replica did not leave)");
        let crd = api.helm(&[
            "template",
            "x",
            "charts/dx-admission",
            "--set",
            "reports.installCRD=true",
            "--show-only",
            "templates/crd-policyreport.yaml",
        ]);
        assert!(crd.status.success(), "helm template: {}", String::from_utf8_lossy(&crd.stderr));
        kubectl(&["apply", "-f", "-"], Some(&String::from_utf8_lossy(&crd.stdout)));
        kubectl(&["wait", "--for=condition=Established", "crd/policyreports.wgpolicyk8s.io", "--timeout=60s"], None);
        println!(
            "{:<9} {:>10} {:>8} {:>13} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "objects",
            "namespaces",
            "reports",
            "first scan s",
            "judging s",
            "objects/s",
            "rescan s",
            "rewrites",
            "RSS MiB",
            "peak MiB"
        );
        let client = common_client(&api.kubeconfig).await;
        let mut made = 0;
        let mut rows = Vec::new();
        for namespaces in [10usize, 50] {
            create_dx_namespaces(&client, made, namespaces).await;
            made = namespaces;
            let (process, scans) = start_reporting(&tls, &api.kubeconfig);
            let first = next_scan(&scans);
            let again = next_scan(&scans);
            let (rss, peak) = (process.memory_mib("VmRSS"), process.memory_mib("VmHWM"));
            let objects = first["objects"].as_u64().unwrap_or(0);
            let seconds = first["seconds"].as_f64().unwrap_or(f64::NAN);
            let count = |scan: &Value, field: &str| scan[field].as_u64().unwrap_or(0);
            println!(
                "{objects:<9} {:>10} {:>8} {seconds:>13.2} {:>10.2} {:>10.0} {:>9.2} {:>9} {rss:>9.1} {peak:>9.1}",
                count(&first, "namespaces"),
                count(&first, "written"),
                first["judging_seconds"].as_f64().unwrap_or(f64::NAN),
                objects as f64 / seconds,
                again["seconds"].as_f64().unwrap_or(f64::NAN),
                count(&again, "written"),
            );
            rows.push((objects as f64, seconds, peak));
        }
        if let [small, large] = rows[..] {
            println!(
                "{:.0}x the objects: {:.2}x the first scan's time, {:.2}x the peak RSS",
                large.0 / small.0,
                large.1 / small.1,
                large.2 / small.2
            );
        }
    }

    println!(
        "\nserver under load: RSS {:.1} MiB, peak {:.1} MiB; total run {:.0} s",
        dx.memory_mib("VmRSS"),
        dx.memory_mib("VmHWM"),
        started.elapsed().as_secs_f64()
    );
    if let Err(why) = &opa {
        println!("Go peer: not run ({why})");
    }
}

async fn common_client(kubeconfig: &Path) -> kube::Client {
    dx_admission::client::connect(Some(kubeconfig)).await.expect("kube client")
}

/// One answer's body, as text (or why there is none).
async fn once_body(target: &Target, request: &Request) -> String {
    load::answer(target, request).await.unwrap_or_else(|why| why)
}

/// Ten minutes (by default) at a fixed rate of the realistic mix against the release server in
/// `--cluster` mode, its cache holding `--config-maps` (10,000) ConfigMaps of a real API server:
/// errors, p99 and RSS every 30 s, then the RSS trend as a least-squares slope per hour with its
/// 95 % bound, and a verdict.
async fn soak(args: &[String]) {
    let flag = |name: &str, default: f64| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
    };
    let (minutes, rate) = (flag("--minutes", 10.0), flag("--rate", 400.0));
    let config_maps = flag("--config-maps", 10_000.0) as usize;
    let tls = Tls::new();
    let workloads = Workloads::new();
    eprintln!("starting kube-apiserver...");
    let bins = cluster::ensure_binaries().expect("kube-apiserver, etcd and kubectl build");
    let api = cluster::Cluster::start(bins).expect("kube-apiserver starts");
    for namespace in ["dx", "cache"] {
        let output = api.kubectl(&["create", "namespace", namespace], None);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let examples = std::fs::read_to_string(repo().join("examples/valid/configmaps.yaml")).expect("examples");
    let output = api.kubectl(&["apply", "-f", "-"], Some(&examples));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    create_config_maps(&common_client(&api.kubeconfig).await, 0, config_maps).await;
    let (dx, _) = start_dx(&tls, &repo().join("schemas"), Some(&api.kubeconfig)).await;
    let target = tls.target(dx.addr);
    // `--only <text>`: just the workloads whose label contains it (e.g. `--only StatefulSet`).
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).map_or("", String::as_str);
    let mix: Vec<Request> = [workloads.all("/validate"), workloads.all("/mutate")]
        .concat()
        .into_iter()
        .filter(|(label, _)| label.contains(only))
        .map(|(_, r)| r)
        .collect();
    assert!(!mix.is_empty(), "--only {only:?} matches no workload");
    println!(
        "soak: {minutes} min at {rate} reviews/s, a mix of {} reviews, --cluster with {config_maps} ConfigMaps cached — {}",
        mix.len(),
        machine()
    );
    let mix: Arc<[Request]> = Arc::from(mix);
    println!("{:>8} {:>10} {:>8} {:>9} {:>9} {:>9}", "minute", "reviews", "failed", "p99 ms", "RSS MiB", "peak MiB");
    let slice = Duration::from_secs(30);
    let slices = (minutes * 2.0).ceil() as usize;
    let (mut total, mut failed) = (0, 0);
    let first_rss = dx.memory_mib("VmRSS");
    let mut samples = Vec::new();
    for i in 0..slices {
        let outcome = load::run(&target, Arc::clone(&mix), CONNECTIONS, Pace::Rate(rate), slice).await;
        total += outcome.ok;
        failed += outcome.failed;
        check("soak", &outcome);
        let hours = (i + 1) as f64 * slice.as_secs_f64() / 3600.0;
        let rss = dx.memory_mib("VmRSS");
        samples.push((hours, rss));
        println!(
            "{:>8.1} {:>10} {:>8} {:>9.2} {:>9.1} {:>9.1}",
            (i + 1) as f64 / 2.0,
            outcome.ok,
            outcome.failed,
            outcome.quantile_ms(0.99),
            rss,
            dx.memory_mib("VmHWM")
        );
    }
    println!(
        "soak done: {total} reviews, {failed} failed; RSS {first_rss:.1} MiB before load, {:.1} MiB at the end",
        dx.memory_mib("VmRSS")
    );
    match rss_trend(&samples) {
        Some((slope, bound)) => {
            let verdict = if slope - bound > 0.0 {
                "GROWING: the RSS rises faster than the noise explains"
            } else if slope + bound < 0.0 {
                "shrinking"
            } else {
                "flat: no growth beyond the noise"
            };
            println!(
                "RSS trend: {slope:+.2} MiB/h, 95 % bound ±{bound:.2} MiB/h over {} samples — {verdict}",
                samples.len()
            );
        }
        None => println!("RSS trend: too few samples (run at least 2 minutes)"),
    }
}

/// The least-squares slope of `(x, y)` and the half-width of its 95 % interval (1.96 standard
/// errors; at least 3 samples).
fn rss_trend(samples: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = samples.len() as f64;
    if samples.len() < 3 {
        return None;
    }
    let (mean_x, mean_y) = (samples.iter().map(|s| s.0).sum::<f64>() / n, samples.iter().map(|s| s.1).sum::<f64>() / n);
    let sxx: f64 = samples.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
    let sxy: f64 = samples.iter().map(|(x, y)| (x - mean_x) * (y - mean_y)).sum();
    let slope = sxy / sxx;
    let residuals: f64 = samples.iter().map(|(x, y)| (y - mean_y - slope * (x - mean_x)).powi(2)).sum();
    let standard_error = (residuals / (n - 2.0) / sxx).sqrt();
    Some((slope, 1.96 * standard_error))
}
