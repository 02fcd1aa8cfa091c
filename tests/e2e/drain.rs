//! A replica stopped by SIGTERM behind the real API server, whose webhook client pools its
//! connections and reuses them without looking at endpoints: under a loop of real
//! `kubectl apply`, every apply succeeds, before, during and after the replica's drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::Env;
use crate::common::binary::{exits_cleanly_after_the_drain, serve, sigterm};
use crate::common::{eventually, http_get, metric_sum, repo};
use crate::relay::Relay;

const NS: &str = "e2e-drain";
/// What the replicas count for the applies of this scenario.
const REVIEWS: &str = "dx_admission_reviews_total{endpoint=\"validate\",kind=\"ConfigMap\"";

/// The phases the load is counted in.
const BEFORE: usize = 0;
const DRAINING: usize = 1;
const AFTER: usize = 2;

pub async fn a_replica_stopped_under_kubectl_apply_fails_no_apply(env: &mut Env) {
    // Two replicas of one Service: the same serving pair, behind a relay that plays the
    // Service's endpoints.
    let (dir, pki) = env.namespace_with_serving_pair(NS);
    let schemas = repo().join("schemas");
    let args = [
        "--tls-cert",
        "tls.crt",
        "--tls-key",
        "tls.key",
        "--schemas",
        schemas.to_str().unwrap(),
        "--drain-delay",
        "3s",
    ];
    let mut a = serve(&dir, &args);
    let b = serve(&dir, &args);
    let relay = Relay::start(a.tls).await;
    let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pki.ca_pem);
    let config = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: e2e-drain\n\
         webhooks:\n  - name: drain.e2e.dx-admission.hcl.com\n    admissionReviewVersions: [v1]\n    sideEffects: None\n    failurePolicy: Fail\n    timeoutSeconds: 10\n\
         \x20   clientConfig:\n      url: https://{}/validate\n      caBundle: {ca}\n\
         \x20   rules:\n      - apiGroups: [\"\"]\n        apiVersions: [v1]\n        operations: [CREATE, UPDATE]\n        resources: [configmaps]\n\
         \x20   namespaceSelector:\n      matchLabels:\n        kubernetes.io/metadata.name: {NS}\n",
        relay.addr
    );
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &config);
    assert!(ok, "{err}");
    let reviews = |ops| async move { metric_sum(ops, REVIEWS).await };

    // The load: three loops of real applies, each changing its ConfigMap so every apply is a
    // review, counted by phase.
    let phase = Arc::new(AtomicUsize::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for id in 0..3 {
        let (phase, stop) = (Arc::clone(&phase), Arc::clone(&stop));
        let (kubectl, kubeconfig) = (env.cluster.bins.kubectl.clone(), env.cluster.kubeconfig.clone());
        loops.push(std::thread::spawn(move || {
            let (mut applied, mut failed) = ([0usize; 3], Vec::new());
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                round += 1;
                let manifest = format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: load-{id}, namespace: {NS}}}\ndata: {{round: '{round}'}}\n"
                );
                let during = phase.load(Ordering::SeqCst);
                let output = crate::cluster::run_kubectl(&kubectl, &kubeconfig, &["apply", "-f", "-"], Some(&manifest));
                if output.status.success() {
                    applied[during] += 1;
                } else {
                    failed.push(String::from_utf8_lossy(&output.stderr).into_owned());
                }
            }
            (applied, failed)
        }));
    }
    // The API server picks the new configuration up asynchronously: A answers some applies first.
    let (a_ops, b_ops) = (a.ops, b.ops);
    assert!(eventually(Duration::from_secs(20), || async move { reviews(a_ops).await >= 10.0 }).await, "A reviews");
    sigterm(&a.child);
    phase.store(DRAINING, Ordering::SeqCst);
    // The endpoints follow A's readiness, as the endpoints controller does.
    assert!(eventually(Duration::from_secs(2), || async { http_get(a_ops, "/readyz").await.0 == 503 }).await);
    relay.retarget(b.tls);
    let b_before = reviews(b_ops).await;
    exits_cleanly_after_the_drain(&mut a).await;
    phase.store(AFTER, Ordering::SeqCst);
    let b_at_exit = reviews(b_ops).await;
    assert!(
        eventually(Duration::from_secs(10), || async move { reviews(b_ops).await >= b_at_exit + 10.0 }).await,
        "B goes on reviewing"
    );
    stop.store(true, Ordering::SeqCst);
    let (mut applied, mut failed) = ([0usize; 3], Vec::new());
    for handle in loops {
        let (counts, failures) = handle.join().unwrap();
        for (total, count) in applied.iter_mut().zip(counts) {
            *total += count;
        }
        failed.extend(failures);
    }
    println!(
        "e2e: SIGTERM under kubectl apply: {} applies before, {} during the drain, {} after; {} failed; B had reviewed {} by A's exit",
        applied[BEFORE],
        applied[DRAINING],
        applied[AFTER],
        failed.len(),
        b_at_exit - b_before
    );
    assert_eq!(failed, Vec::<String>::new(), "failed applies");
    // Told to leave (Connection: close, GOAWAY), the API server moved to B while A still served:
    // nothing was in use when A closed its connections.
    assert!(b_at_exit > b_before, "the API server stayed on A's connections until A closed them");
    for (name, count) in ["before", "during the drain", "after"].iter().zip(applied) {
        assert!(count > 0, "no apply {name}");
    }
    let (ok, _, err) = env.kubectl(&["delete", "validatingwebhookconfiguration", "e2e-drain"]);
    assert!(ok, "{err}");
}
