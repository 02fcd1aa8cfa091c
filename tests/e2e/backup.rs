//! The backup gate through the real API server, served by the chart's replicas: a new DAM
//! release without a backup is refused, then with one too old, then admitted once the example
//! backup CronJob's Job completes on the simulated nodes; a `helm rollback` that lowers the
//! versions is refused as a whole, and goes through once the downgrade is declared.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::common::{eventually, repo};
use crate::release::{RELEASE, dx_example_chart, fleet_sum};
use crate::workloads::roll;
use crate::{Env, chart};

const NAMESPACE: &str = "dx-release";

/// An example of `examples/` in the release's namespace.
fn example(path: &str) -> String {
    std::fs::read_to_string(repo().join("examples").join(path))
        .unwrap()
        .replace("namespace: dx\n", &format!("namespace: {NAMESPACE}\n"))
}

/// Runs the example backup CronJob of `component` by hand, as the denial says, and waits for
/// its Job to complete on the simulated nodes.
pub fn run_backup(env: &Env, component: &str) {
    for file in ["backup/claim.yaml".to_owned(), format!("backup/{component}.yaml")] {
        let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &example(&file));
        assert!(ok, "{file}: {err}");
    }
    let job = format!("dx-{component}-backup-e2e");
    let (ok, _, err) =
        env.kubectl(&["create", "job", &format!("--from=cronjob/dx-{component}-backup"), &job, "-n", NAMESPACE]);
    assert!(ok, "{err}");
    let (ok, _, err) =
        env.kubectl(&["wait", "--for=condition=complete", &format!("job/{job}"), "-n", NAMESPACE, "--timeout=60s"]);
    assert!(ok, "the backup Job completes on the simulated nodes: {err}");
}

/// DAM on a release no one has run here yet.
fn next_dam() -> String {
    let dam = example("valid/dam.yaml").replace("hcl/dx/dam:95_CF225", "hcl/dx/dam:95_CF227");
    assert!(dam.contains("95_CF227"));
    dam
}

const FIX: &str = "take one (e.g. kubectl create job --from=cronjob/dx-dam-backup dx-dam-backup-$(date +%s) -n dx-release), \
                   wait for it to complete, then apply again; or set annotation dx.hcl.com/backup-skip-reason to say why not";

/// A new DAM image is category A: refused with no backup, refused with one older than
/// `backup.maxAge`, admitted once the example CronJob's Job completes.
pub async fn a_new_dam_release_needs_a_recent_backup(env: &mut Env) {
    let env: &Env = env;
    let dam = next_dam();
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &dam);
    assert!(!ok, "applied without a backup");
    let none = format!(
        "admission webhook \"validate.dx-admission.hcl.com\" denied the request: StatefulSet dx-release/dx-dam rejected under DX schema v2 (1 problem):\n\
         - StatefulSet dx-release/dx-dam: a category A change of dam needs a backup first, and no completed backup of dam \
         was found in dx-release (a Job or VolumeSnapshot labelled dx.hcl.com/backup-of: dam or all) [backup-before-update] fix: {FIX}\n"
    );
    assert!(err.ends_with(&none), "{err}");

    // A snapshot of DAM's upload claim, taken 30 hours ago: too old for the default 24h.
    let taken = Timestamp::now() - SignedDuration::from_hours(30);
    let snapshot = format!(
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata:\n  name: dx-dam-upload-old\n  namespace: {NAMESPACE}\n  \
         labels: {{dx.hcl.com/backup-of: dam}}\nspec:\n  source: {{persistentVolumeClaimName: dx-dam-upload}}\n\
         status:\n  readyToUse: true\n  creationTime: \"{taken}\"\n"
    );
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &snapshot);
    assert!(ok, "{err}");
    let stale = format!(
        "- StatefulSet dx-release/dx-dam: a category A change of dam needs a recent backup first; the newest, \
         VolumeSnapshot dx-release/dx-dam-upload-old, completed 30h ago, more than backup.maxAge 24h [backup-before-update] fix: {FIX}\n"
    );
    let mut last = String::new();
    let seen = eventually(Duration::from_secs(15), || {
        let (_, _, err) = env.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &dam);
        let done = err.ends_with(&stale);
        last = err;
        async move { done }
    })
    .await;
    assert!(seen, "{last}");

    run_backup(env, "dam");
    let admitted = eventually(Duration::from_secs(15), || {
        let (ok, _, _) = env.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &dam);
        async move { ok }
    })
    .await;
    assert!(admitted, "the apply is admitted once the backup completed");
    let rolled = roll(env, NAMESPACE, 1, |env| {
        let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &dam);
        assert!(ok, "{err}");
    })
    .await;
    assert_eq!(rolled.counts(), ["statefulset/dx-dam: 1"]);

    // The gauge an alert reads: when the newest backup of each component finished, 0 for none.
    let completed = |job: &str| {
        let (_, time, _) =
            env.kubectl(&["get", "job", job, "-n", NAMESPACE, "-o", "jsonpath={.status.completionTime}"]);
        time.parse::<Timestamp>().unwrap().as_second() as f64
    };
    let series = |component: &str| {
        format!("dx_admission_backup_completed_timestamp_seconds{{namespace=\"dx-release\",component=\"{component}\"}}")
    };
    let replicas = env.fleet.as_ref().expect("the chart's replicas").replicas.len() as f64;
    let expected = [
        ("core", completed("dx-core-backup-e2e") * replicas),
        ("dam", completed("dx-dam-backup-e2e") * replicas),
        ("persistence", 0.0),
    ];
    let gauged = eventually(Duration::from_secs(15), || async {
        let mut all = true;
        for (component, value) in expected {
            all &= fleet_sum(env, &series(component)).await == value;
        }
        all
    })
    .await;
    assert!(gauged, "every replica exports the newest completion of each component, 0 for none: {expected:?}");
}

/// `helm rollback` to a release with lower versions: Helm applies the ConfigMaps first, and
/// `version-downgrade` refuses the first one, so nothing changes. Declared on the live objects
/// first, as the README says, the same rollback goes through.
pub async fn a_refused_helm_rollback_changes_nothing_until_the_downgrade_is_declared(env: &mut Env) {
    let env: &Env = env;
    let chart = dx_example_chart(env.cluster.dir.path());
    let chart = chart.to_str().unwrap();
    let all = format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: dx-backup-all-e2e\n  namespace: {NAMESPACE}\n  labels: {{dx.hcl.com/backup-of: all}}\n\
         spec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - {{name: backup, image: registry.example.com/dx/backup-tools:1.4.2}}\n"
    );
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &all);
    assert!(ok, "{err}");
    let (ok, _, err) =
        env.kubectl(&["wait", "--for=condition=complete", "job/dx-backup-all-e2e", "-n", NAMESPACE, "--timeout=60s"]);
    assert!(ok, "{err}");
    let (_, history, _) = chart::helm(env, &["history", RELEASE, "--namespace", NAMESPACE, "-o", "json"]);
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    let previous = history.as_array().unwrap().last().unwrap()["revision"].to_string();
    let newer = format!("{},version=95.226.0,ringApi.logLevel=error", crate::release::UPGRADE);
    // Every stateful workload's version goes up (A): the backup of `all` admits them.
    let admitted = eventually(Duration::from_secs(15), || {
        let (ok, _, _) = chart::helm(
            env,
            &["upgrade", RELEASE, chart, "--namespace", NAMESPACE, "--set", &newer, "--dry-run=server"],
        );
        async move { ok }
    })
    .await;
    assert!(admitted, "the backup of all is seen");
    // The previous scenario moved DAM's image with kubectl: Helm's server-side apply takes the
    // field back only when told to. DAM returns to the chart's image, a template whose revision
    // the StatefulSet already has (so no new revision is counted).
    let rolled = roll(env, NAMESPACE, 1, |env| {
        let upgrade = ["upgrade", RELEASE, chart, "--namespace", NAMESPACE, "--set", &newer, "--force-conflicts"];
        let (ok, out, err) = chart::helm(env, &upgrade);
        assert!(ok, "{out}{err}");
    })
    .await;
    assert_eq!(rolled.counts(), ["deployment/dx-ring-api: 1"]);
    let (_, image, _) = env.kubectl(&[
        "get",
        "statefulset",
        "dx-dam",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, "hcl/dx/dam:95_CF225", "the chart's image again");
    let state = || {
        let (_, level, _) = env.kubectl(&[
            "get",
            "configmap",
            "dx-ring-api-config",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.data.log\\.level}",
        ]);
        let (_, versions, _) = env.kubectl(&[
            "get",
            "configmaps,statefulsets,deployments",
            "-n",
            NAMESPACE,
            "-l",
            "app.kubernetes.io/part-of=dx",
            "-o",
            "jsonpath={range .items[*]}{.metadata.labels.app\\.kubernetes\\.io/version}{' '}{end}",
        ]);
        let mut versions: Vec<String> = versions.split_whitespace().map(str::to_owned).collect();
        versions.sort();
        versions.dedup();
        (level, versions)
    };
    assert_eq!(state(), ("error".to_owned(), vec!["95.226.0".to_owned()]));

    let (ok, out, err) = chart::helm(env, &["rollback", RELEASE, &previous, "--namespace", NAMESPACE]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(
            "rejected under DX schema v2 (1 problem):\n- metadata.labels[app.kubernetes.io/version]: 95.226.0 -> 95.225.0 is a downgrade; \
             a rollback needs the backup taken before the update to 95.226.0 [version-downgrade] fix: restore the backup taken \
             before the update, then set annotation dx.hcl.com/allow-downgrade: \"true\""
        ),
        "{err}"
    );
    assert_eq!(state(), ("error".to_owned(), vec!["95.226.0".to_owned()]), "the refused rollback changed nothing");

    let (ok, _, err) = env.kubectl(&[
        "annotate",
        "configmaps,statefulsets,deployments",
        "-n",
        NAMESPACE,
        "-l",
        "app.kubernetes.io/part-of=dx",
        "dx.hcl.com/allow-downgrade=true",
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = chart::helm(env, &["rollback", RELEASE, &previous, "--namespace", NAMESPACE]);
    assert!(ok, "{out}{err}");
    assert_eq!(state(), ("warn".to_owned(), vec!["95.225.0".to_owned()]), "the declared rollback restored the release");
    println!(
        "e2e: helm rollback across a version: refused whole without the annotation, done with it (revision {previous})"
    );
}
