//! The chart in its default certificate mode with cert-manager's own controller and cainjector
//! (see `cluster`): cert-manager issues the chart's CA and serving certificate, the cainjector
//! fills both webhook configurations' caBundle, the replicas serve the Secret as the kubelet
//! projects it, and renewals and a CA roll by cert-manager pass under load.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Client, eventually, repo};
use crate::replicas::{Fleet, NAMESPACE, RELEASE, both_bundles_become, ca_bundle, volume_files};
use crate::{Env, chart};

/// The name the API server verifies the replicas' certificate for (the Service's).
const SERVICE_NAME: &str = "dx-admission.dx-system.svc";
/// How many renewals the rotation scenario waits through.
const RENEWALS: usize = 3;

/// `kubectl apply` of a DX ConfigMap no workload uses (a real write each time) and server-side
/// dry runs of a DX Deployment, back to back through the API server until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<(usize, Vec<String>)>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(env: &Env) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new((0, Vec::new())));
        let config = std::fs::read_to_string(repo().join("examples/valid/configmaps.yaml"))
            .unwrap()
            .split("\n---\n")
            .find(|d| d.contains("name: dx-ring-api-config\n"))
            .unwrap()
            .replace("name: dx-ring-api-config", "name: dx-rotation-probe");
        let deployment = std::fs::read_to_string(repo().join("examples/valid/ring-api.yaml")).unwrap();
        let threads = [(config, false), (deployment, true)]
            .into_iter()
            .map(|(manifest, dry_run)| {
                let (stop, requests) = (Arc::clone(&stop), Arc::clone(&requests));
                let (kubectl, kubeconfig) = (env.cluster.bins.kubectl.clone(), env.cluster.kubeconfig.clone());
                std::thread::spawn(move || {
                    for round in 0usize.. {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let (args, manifest): (&[&str], String) = if dry_run {
                            (&["apply", "--dry-run=server", "-f", "-"], manifest.clone())
                        } else {
                            (
                                &["apply", "-f", "-"],
                                manifest
                                    .replace("request.timeout: 30s", &format!("request.timeout: {}s", round % 50 + 1)),
                            )
                        };
                        let output = crate::cluster::run_kubectl(&kubectl, &kubeconfig, args, Some(&manifest));
                        let mut requests = requests.lock().unwrap();
                        requests.0 += 1;
                        if !output.status.success() {
                            requests.1.push(String::from_utf8_lossy(&output.stderr).into_owned());
                        }
                    }
                })
            })
            .collect();
        Self { stop, requests, threads }
    }

    fn answered(&self) -> usize {
        self.requests.lock().unwrap().0
    }

    /// Waits (at most 30 s) until `more` requests were answered from now.
    async fn goes_on(&self, more: usize) {
        let mark = self.answered();
        let went_on = eventually(Duration::from_secs(30), || {
            let done = self.answered() >= mark + more;
            async move { done }
        });
        assert!(went_on.await, "the load goes on");
    }

    /// Stops the load; returns how many requests went through and the errors of those that failed.
    fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let requests = self.requests.lock().unwrap();
        (requests.0, requests.1.clone())
    }
}

/// The serials new handshakes get from each replica, sampled every 100 ms until stopped.
struct Handshakes {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Handshakes {
    fn start(fleet: &Fleet, ca_pem: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let replicas: Vec<(String, Client)> = fleet
            .replicas
            .iter()
            .map(|(identity, running)| (identity.clone(), Client { addr: running.tls, ca_pem: ca_pem.clone() }))
            .collect();
        let (halt, sink) = (Arc::clone(&stop), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            while !halt.load(Ordering::SeqCst) {
                for (identity, client) in &replicas {
                    if let Ok(serial) = client.serial_as(SERVICE_NAME).await {
                        sink.lock().unwrap().entry(identity.clone()).or_insert_with(BTreeSet::new).insert(serial);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { stop, seen, task }
    }

    async fn stop(self) -> BTreeMap<String, BTreeSet<String>> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        self.seen.lock().unwrap().clone()
    }
}

/// Waits until every replica serves `serial` to new handshakes.
async fn served_by_all(fleet: &Fleet, ca_pem: &str, serial: &str) -> bool {
    eventually(Duration::from_secs(30), || async {
        for running in fleet.replicas.values() {
            let client = Client { addr: running.tls, ca_pem: ca_pem.to_owned() };
            if client.serial_as(SERVICE_NAME).await.ok().as_deref() != Some(serial) {
                return false;
            }
        }
        true
    })
    .await
}

/// The chart installed in cert-manager mode with a serving certificate renewed every ~10 s:
/// cert-manager issues it, the cainjector fills both caBundles, two replicas serve the projected
/// Secret, and three renewals under load fail no request; each new serial reaches both replicas'
/// new handshakes and is counted as one reload.
pub async fn cert_manager_issues_injects_and_renews_under_load(env: &mut Env) {
    // The self-managed release and its replicas go; its Secret was made by the replicas.
    env.fleet = None;
    let (ok, out, err) = chart::helm(env, &["uninstall", RELEASE, "--namespace", NAMESPACE, "--ignore-not-found"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) =
        env.kubectl(&["delete", "secret", &format!("{RELEASE}-tls"), "-n", NAMESPACE, "--ignore-not-found"]);
    assert!(ok, "{err}");
    let installed = Instant::now();
    let mut fleet =
        Fleet::install(env, &["certificates.certManager.duration=1h,certificates.certManager.renewBefore=59m50s"])
            .await;
    assert!(fleet.projection.is_some(), "cert-manager mode projects the Secret");
    let issued = installed.elapsed();
    // The trust anchor: the chart's root, which signed the CA that issued the serving certificate.
    let ca = secret_certificate(env, &format!("{RELEASE}-root")).expect("the chart's root");
    assert!(both_bundles_become(env, &ca).await, "the cainjector puts the chart's root into both configurations");
    let (policy, key) = volume_files(env);
    for identity in ["dx-admission-f", "dx-admission-g"] {
        fleet.start(identity, &policy, &key);
    }
    env.fleet = Some(fleet);
    let fleet = env.fleet.as_ref().unwrap();
    let projection = fleet.projection.as_ref().unwrap();
    println!(
        "e2e: cert-manager issued the serving certificate {:.1}s after helm install; the cainjector filled both caBundles",
        issued.as_secs_f64()
    );

    let load = Load::start(env);
    let first = projection.serials().len();
    let handshakes = Handshakes::start(fleet, ca.clone());
    let renewed = eventually(Duration::from_secs(120), || {
        let done = projection.serials().len() > first + RENEWALS;
        async move { done }
    });
    assert!(renewed.await, "cert-manager renews {RENEWALS} times within 120s: {:?}", projection.serials());
    let serials = projection.serials();
    let last = serials.last().unwrap().clone();
    assert!(served_by_all(fleet, &ca, &last).await, "both replicas serve {last}");
    load.goes_on(4).await;
    let seen = handshakes.stop().await;
    let (requests, failures) = load.stop();
    let renewals: BTreeSet<String> = serials[first..].iter().cloned().collect();
    println!(
        "e2e: cert-manager renewals under load: {} new serving certificates, {requests} requests through the API server, {} failed",
        renewals.len(),
        failures.len()
    );
    assert_eq!(failures, Vec::<String>::new(), "no request fails across the renewals");
    for (identity, running) in &fleet.replicas {
        // Every certificate issued while handshakes were sampled was served (the one serving
        // when sampling began may have been replaced before the first sample).
        let possible: BTreeSet<String> = serials[first - 1..].iter().cloned().collect();
        assert!(seen[identity].is_superset(&renewals), "{identity}: saw {:?}, issued {renewals:?}", seen[identity]);
        assert!(seen[identity].is_subset(&possible), "{identity}: saw {:?}", seen[identity]);
        let own: BTreeSet<String> = projection.serials_of(&fleet.dir, identity).into_iter().collect();
        let reloads = crate::common::metric(running.ops, "dx_admission_tls_reloads_total{result=\"ok\"}").await;
        assert_eq!(reloads as usize, own.len() - 1, "{identity}: one reload per new certificate");
        let refused = crate::common::metric(running.ops, "dx_admission_tls_reloads_total{result=\"failed\"}").await;
        assert_eq!(refused, 0.0, "{identity}");
    }
}

/// `tls.crt` of Secret `name` in the release's namespace.
fn secret_certificate(env: &Env, name: &str) -> Option<String> {
    let (ok, out, _) = env.kubectl(&["get", "secret", name, "-n", NAMESPACE, "-o", "jsonpath={.data.tls\\.crt}"]);
    let pem = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, out.trim()).ok()?;
    (ok && !pem.is_empty()).then(|| String::from_utf8(pem).unwrap())
}

/// The subject and authority key identifiers of the first certificate in `pem`.
fn key_ids(pem: &str) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::extensions::ParsedExtension;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let (mut subject, mut authority) = (None, None);
    for extension in parsed.extensions() {
        match extension.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => subject = Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(id) => authority = id.key_identifier.as_ref().map(|k| k.0.to_vec()),
            _ => {}
        }
    }
    (subject, authority)
}

/// Whether the first certificate in `leaf` was issued by the CA certificate `ca`.
fn issued_by(leaf: &str, ca: &str) -> bool {
    let (ca_key, _) = key_ids(ca);
    ca_key.is_some() && key_ids(leaf).1 == ca_key
}

/// The chart's CA re-issued by cert-manager (its Secret deleted) under load: the new CA issues
/// the next serving certificate, the replicas serve it, the API server keeps trusting them, and
/// no request fails.
pub async fn a_ca_roll_by_cert_manager_fails_no_request(env: &mut Env) {
    let fleet = env.fleet.as_ref().expect("the cert-manager mode replicas");
    let projection = fleet.projection.as_ref().unwrap();
    let ca_secret = format!("{RELEASE}-ca");
    let read_ca = || secret_certificate(env, &ca_secret);
    let old_ca = read_ca().expect("the chart's CA");
    let bundle = ca_bundle(env, "validatingwebhookconfiguration");
    let load = Load::start(env);
    load.goes_on(3).await;
    let rolled_at = Instant::now();
    let (ok, _, err) = env.kubectl(&["delete", "secret", &ca_secret, "-n", NAMESPACE]);
    assert!(ok, "{err}");
    let reissued = eventually(Duration::from_secs(60), || {
        let done = read_ca().is_some_and(|ca| ca != old_ca);
        async move { done }
    });
    assert!(reissued.await, "cert-manager re-issues the CA");
    let new_ca = read_ca().unwrap();
    // The next serving certificate comes from the new CA, and both replicas serve it.
    let from_new_ca = eventually(Duration::from_secs(60), || {
        let done = issued_by(&projection.tls_crt(), &new_ca);
        async move { done }
    });
    assert!(from_new_ca.await, "a serving certificate issued by the new CA is projected");
    let serving = projection.serials().last().unwrap().clone();
    let trusted = ca_bundle(env, "validatingwebhookconfiguration");
    assert!(served_by_all(fleet, &trusted, &serving).await, "both replicas serve {serving}");
    load.goes_on(6).await;
    let (requests, failures) = load.stop();
    println!(
        "e2e: CA roll by cert-manager under load: a serving certificate from the new CA served {:.1}s after the CA's Secret was deleted; {requests} requests, {} failed",
        rolled_at.elapsed().as_secs_f64(),
        failures.len(),
    );
    assert_eq!(failures, Vec::<String>::new(), "no request fails across the CA roll");
    assert_eq!(trusted, bundle, "the caBundle keeps the root: the roll needs no new trust");
}
