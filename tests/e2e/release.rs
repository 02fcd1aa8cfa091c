//! The DX example release: `examples/valid` installed, upgraded and rolled back as a Helm
//! release, judged and stamped by the chart's replicas, with rollouts counted as users count
//! them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::repo;
use crate::workloads::{roll, wait_until_rolled_out};
use crate::{Env, chart};

const RELEASE: &str = "dx-example";
const NAMESPACE: &str = "dx-release";

/// The DX example deployment as a Helm chart: the templates are `examples/valid/` with the
/// release's namespace and two values (`ringApi.tag`, `ringApi.logLevel`); the chart's metadata
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
        let text = text.replace("hcl/dx/ring-api:95_CF225", "hcl/dx/ring-api:{{ .Values.ringApi.tag }}");
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
