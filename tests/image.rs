//! The image users run (`dx-admission:dev`, built by `.ci/image`), started with docker as the
//! chart runs it. Part of the README's test command: without an image and a Docker daemon
//! (`.ci/run` provides both) every test is reported ignored, with the reason, never passed.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::docker::{AS_THE_CHART, Container, docker, image, unavailable};
use common::{Client, Pki, SecretMount, eventually, examples, http1, review, send, serial_of_pem};

/// What `/validate` answers for `examples/broken/ring-api-unpinned-no-probe.yaml`.
const DENIAL: &str = "Deployment dx/dx-ring-api-unpinned rejected under DX schema v2 (2 problems):\n\
     - spec.template.spec.containers[0].image: image \"hcl/dx/ring-api:latest\" uses the moving tag latest [image-pinned] fix: use a DX release tag (e.g. :95_CF225) or an @sha256 digest\n\
     - spec.template.spec.containers[0].readinessProbe: container \"ring-api\" has no readiness probe [readiness-probe] fix: add a readinessProbe (e.g. an httpGet on the application's health endpoint)";

/// The chart's TLS args: the pair from the Secret volume at /etc/dx-admission/tls.
const CHART_TLS: [&str; 2] = ["--tls-cert=/etc/dx-admission/tls/tls.crt", "--tls-key=/etc/dx-admission/tls/tls.key"];

/// A directory the container's user (65532) can read, for a volume.
fn volume_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A serving pair from `pki` mounted like a Secret volume, and the `--volume` flag for it.
fn tls_volume(dir: &Path, pki: &Pki) -> (SecretMount, String) {
    let (cert, key) = pki.issue();
    (SecretMount::new(dir, &cert, &key), format!("{}:/etc/dx-admission/tls:ro", dir.display()))
}

fn broken_review() -> serde_json::Value {
    let (_, object) = examples("broken").into_iter().find(|(f, _)| f == "ring-api-unpinned-no-probe.yaml").unwrap();
    review("CREATE", Some(&object), None)
}

/// A DX Core ConfigMap whose `cache.entries` the v2 schema bounds (1,000,000 bundled).
fn core_config(entries: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dx-core-config", "namespace": "dx",
                     "labels": {"app.kubernetes.io/part-of": "dx", "app.kubernetes.io/component": "core"}},
        "data": {"log.level": "info", "jvm.heap.max": "4Gi", "cache.entries": entries}
    })
}

async fn validate(client: &Client, review: &serde_json::Value) -> serde_json::Value {
    let (status, answer) =
        client.post("/validate", "application/json", Bytes::from(serde_json::to_vec(review).unwrap())).await;
    assert_eq!(status, 200, "{answer}");
    answer["response"].clone()
}

/// Started as the chart runs it, with no --schemas (the bundled ones): ready, metrics, denials.
async fn starts_as_the_chart_runs_it_and_answers() {
    let dir = volume_dir();
    let pki = Pki::new("image test CA");
    let (_mount, volume) = tls_volume(dir.path(), &pki);
    let container = Container::serve(&[volume], &CHART_TLS).await;
    println!("image: ready {:.2}s after docker run", container.ready_after.as_secs_f64());
    assert_eq!(container.inspect("{{.Config.User}}"), "65532:65532");
    assert_eq!(container.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(container.inspect("{{.HostConfig.CapDrop}}"), "[ALL]");
    assert_eq!(container.inspect("{{.HostConfig.SecurityOpt}}"), "[no-new-privileges]");
    assert_eq!(common::http_get(container.ops, "/readyz").await, (200, "ok".to_owned()));
    let client = Client { addr: container.tls, ca_pem: pki.ca_pem.clone() };
    let answer = validate(&client, &broken_review()).await;
    assert_eq!(answer["allowed"], false);
    assert_eq!(answer["status"]["message"], DENIAL);
    let valid = examples("valid").into_iter().find(|(f, _)| f == "ring-api.yaml").unwrap().1;
    let answer = validate(&client, &review("CREATE", Some(&valid), None)).await;
    assert_eq!(answer["allowed"], true, "{answer}");
    let (status, metrics) = common::http_get(container.ops, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    assert_eq!(common::metric_sum(container.ops, "dx_admission_reviews_total{").await, 2.0, "{metrics}");
}

/// The kubelet's `..data` swap in the certificate volume rotates the serving certificate in the
/// running container: a new handshake gets the new serial.
async fn swapping_data_rotates_the_serving_certificate() {
    let dir = volume_dir();
    let pki = Pki::new("image rotation CA");
    let (mut mount, volume) = tls_volume(dir.path(), &pki);
    let first = serial_of_pem(&std::fs::read_to_string(mount.cert()).unwrap());
    let container = Container::serve(&[volume], &CHART_TLS).await;
    let client = Client { addr: container.tls, ca_pem: pki.ca_pem.clone() };
    assert_eq!(client.serial().await, first);
    let (cert, key) = pki.issue();
    mount.swap(&cert, &key);
    let next = serial_of_pem(&cert);
    let rotated = eventually(Duration::from_secs(20), || async { client.serial().await == next }).await;
    assert!(rotated, "the swapped pair serves new handshakes; log:\n{}", container.logs());
}

/// Schemas from a ConfigMap volume (flat `__` names) replace the bundled ones, and a `..data`
/// swap reloads them in the running container.
async fn schemas_from_a_config_map_volume_replace_the_bundled_ones_and_reload() {
    let bundled = common::flat_schemas(&common::repo().join("schemas"));
    let mut tightened = bundled.clone();
    for (name, content) in &mut tightened {
        if name == "v2__configmap__core.json" {
            let text = String::from_utf8(content.clone()).unwrap();
            assert!(text.contains("\"dxMaximum\": 1000000"));
            *content = text.replace("\"dxMaximum\": 1000000", "\"dxMaximum\": 2000").into_bytes();
        }
    }
    let schemas = volume_dir();
    let mut mount = SecretMount::of_files(schemas.path(), &common::borrowed(&tightened));
    let certs = volume_dir();
    let pki = Pki::new("image schemas CA");
    let (_pair, volume) = tls_volume(certs.path(), &pki);
    let mut args = CHART_TLS.to_vec();
    args.push("--schemas=/etc/dx-admission/schemas");
    let container =
        Container::serve(&[volume, format!("{}:/etc/dx-admission/schemas:ro", schemas.path().display())], &args).await;
    let client = Client { addr: container.tls, ca_pem: pki.ca_pem.clone() };
    let review = review("CREATE", Some(&core_config("5000")), None);
    // The bundled schemas allow 5000 entries; the mounted ones allow 2000.
    assert_eq!(validate(&client, &review).await["allowed"], false);
    mount.swap_files(&common::borrowed(&bundled));
    let reloaded =
        eventually(Duration::from_secs(20), || async { validate(&client, &review).await["allowed"] == true });
    assert!(reloaded.await, "the swapped schemas judge; log:\n{}", container.logs());
}

/// `docker stop` while reviews come back to back: every request the container accepted is
/// answered, and it exits with 0 within the grace period (after the chart's 5 s drain).
async fn docker_stop_under_a_request_loop_fails_no_request() {
    let dir = volume_dir();
    let pki = Pki::new("image stop CA");
    let (_mount, volume) = tls_volume(dir.path(), &pki);
    let mut args = CHART_TLS.to_vec();
    args.extend(["--drain-delay=5s", "--shutdown-grace=20s"]);
    let container = Container::serve(&[volume], &args).await;
    let client = Client { addr: container.tls, ca_pem: pki.ca_pem.clone() };
    let body = Bytes::from(serde_json::to_vec(&broken_review()).unwrap());
    let (answered, failed, stopping) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let during_stop = Arc::new(AtomicUsize::new(0));
    let load = {
        let (answered, failed, stopping, during_stop) =
            (Arc::clone(&answered), Arc::clone(&failed), Arc::clone(&stopping), Arc::clone(&during_stop));
        tokio::spawn(async move {
            loop {
                // Refused once the container stopped listening: the end of the loop, as a
                // Service would no longer send here.
                let Ok(stream) = client.connect().await else { return };
                let mut sender = http1(stream).await;
                let (status, _) = send(&mut sender, "/validate", "application/json", body.clone()).await;
                if status == 200 {
                    answered.fetch_add(1, Ordering::SeqCst);
                    if stopping.load(Ordering::SeqCst) {
                        during_stop.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let running = eventually(Duration::from_secs(10), || async { answered.load(Ordering::SeqCst) >= 10 }).await;
    assert!(running, "the load runs");
    stopping.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let id = container.id.clone();
    let stopped = tokio::task::spawn_blocking(move || docker(&["stop", "--time", "30", &id], None)).await.unwrap();
    let took = started.elapsed();
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    load.await.expect("the load loop ends without a panic");
    let (answered, failed, during) =
        (answered.load(Ordering::SeqCst), failed.load(Ordering::SeqCst), during_stop.load(Ordering::SeqCst));
    println!(
        "image: docker stop under load: {answered} reviews, {during} during the stop, {failed} failed; stopped in {:.1}s",
        took.as_secs_f64()
    );
    assert_eq!(failed, 0);
    assert!(during > 0, "reviews were answered during the drain");
    assert_eq!(container.inspect("{{.State.ExitCode}}"), "0", "exited cleanly, not killed; log:\n{}", container.logs());
}

/// `check -f -` in the image reads manifests on stdin and finds the bundled schemas unasked.
async fn check_reads_stdin_and_exits_1_on_a_broken_manifest() {
    let image = image().unwrap();
    let run = |file: &str| {
        let manifest = std::fs::read_to_string(common::repo().join(file)).unwrap();
        let mut args = vec!["run", "--rm", "--interactive"];
        args.extend(AS_THE_CHART);
        args.extend([image.as_str(), "check", "-f", "-"]);
        let output = docker(&args, Some(&manifest));
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (code, out) = run("examples/broken/ring-api-unpinned-no-probe.yaml");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.ends_with("1 DX object checked: 1 denied, 0 passed (0 with warnings); 0 not DX, 0 of other kinds\n"),
        "{out}"
    );
    let (code, out) = run("examples/valid/ring-api.yaml");
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out,
        "<stdin>: Deployment dx/dx-ring-api passed (DX schema v2)\n1 DX object checked: 0 denied, 1 passed (0 with warnings); 0 not DX, 0 of other kinds\n"
    );
}

type Test = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => { vec![$((stringify!($name), (|| Box::pin($name())) as Test)),*] };
}

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    std::env::set_current_dir(common::repo()).unwrap();
    let why = unavailable();
    if let Some(why) = &why {
        eprintln!("image tests ignored: {why}");
    }
    let trials = tests![
        starts_as_the_chart_runs_it_and_answers,
        swapping_data_rotates_the_serving_certificate,
        schemas_from_a_config_map_volume_replace_the_bundled_ones_and_reload,
        docker_stop_under_a_request_loop_fails_no_request,
        check_reads_stdin_and_exits_1_on_a_broken_manifest,
    ]
    .into_iter()
    .map(|(name, test)| {
        libtest_mimic::Trial::test(name, move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(test())));
            outcome.map_err(common::failed)
        })
        .with_ignored_flag(why.is_some())
    })
    .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
