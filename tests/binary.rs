//! The `dx-admission` binary as people run it: `serve --dev`, shutdown on SIGTERM, start-up
//! errors that name the flag to fix, and `check` with its exit codes.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::binary::{BIN, exits_cleanly_after_the_drain, serve, sigterm};
use common::{Client, eventually, fixture, http_get, repo};
use serde_json::Value;

#[tokio::test]
async fn serve_dev_generates_certificates_and_prints_webhook_configurations() {
    let dir = tempfile::tempdir().unwrap();
    let schemas = repo().join("schemas");
    let mut running = serve(dir.path(), &["--dev", "--schemas", schemas.to_str().unwrap(), "--drain-delay", "1s"]);
    let ca = std::fs::read_to_string(dir.path().join("certs/dev/ca.crt")).unwrap();
    assert!(dir.path().join("certs/dev/tls.crt").exists() && dir.path().join("certs/dev/tls.key").exists());

    // The printed configurations point at the server and carry the dev CA as caBundle.
    let printed = running.stdout.clone();
    assert!(printed.contains(&format!("url: https://{}/validate", running.tls)), "{printed}");
    assert!(printed.contains(&format!("url: https://{}/mutate", running.tls)), "{printed}");
    let bundle = printed.lines().find_map(|l| l.trim().strip_prefix("caBundle: ")).expect("caBundle printed");
    let decoded = base64::engine::general_purpose::STANDARD.decode(bundle).unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), ca);
    let documents: Vec<Value> = common::yaml_from_str(&printed);
    let kinds: Vec<&str> = documents.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"]);
    assert_eq!(documents[1]["webhooks"][0]["reinvocationPolicy"], "IfNeeded");
    let names: Vec<&str> =
        documents[0]["webhooks"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["validate.dx-admission.hcl.com"], "no delete guard without --cluster: its rule could not judge");

    // The README's curl, with the dev CA.
    let client = Client { addr: running.tls, ca_pem: ca };
    let body = fixture("configmap-create-allowed.json");
    let (status, answer) = client.post("/validate", "application/json", body.to_string().into()).await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["uid"], body["request"]["uid"]);

    // SIGTERM: not ready at once, still answering during the drain delay, then a clean exit.
    sigterm(&running.child);
    let ops = running.ops;
    assert!(
        eventually(Duration::from_secs(1), || async { http_get(ops, "/readyz").await == (503, "draining".into()) })
            .await
    );
    let (status, _) = client.post("/validate", "application/json", body.to_string().into()).await;
    assert_eq!(status, 200, "reviews are still answered while draining");
    exits_cleanly_after_the_drain(&mut running).await;
    let logs: Vec<Value> = running.logs.try_iter().collect();
    assert!(logs.iter().any(|l| l["message"] == "stopped"), "{logs:?}");

    // A second start reuses the still-valid dev certificates.
    let again = serve(dir.path(), &["--dev", "--schemas", schemas.to_str().unwrap()]);
    let reused = std::fs::read_to_string(dir.path().join("certs/dev/ca.crt")).unwrap();
    assert_eq!(reused, client.ca_pem);
    drop(again);
}

fn start_error(args: &[&str]) -> (i32, String) {
    let output = Command::new(BIN).arg("serve").args(args).output().unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn start_up_errors_name_the_flag_to_fix() {
    let temp = tempfile::tempdir().unwrap();
    let pki = common::Pki::new("ca");
    let (cert, key) = pki.issue();
    let (cert_path, key_path) = (temp.path().join("tls.crt"), temp.path().join("tls.key"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let (_, other_key) = pki.issue();
    let wrong_key = temp.path().join("other.key");
    std::fs::write(&wrong_key, other_key).unwrap();
    let bad_config = temp.path().join("config.yaml");
    std::fs::write(&bad_config, "rules:\n  image-pined: warn\n").unwrap();
    let schemas = repo().join("schemas");
    let short = temp.path().join("short.key");
    std::fs::write(&short, "fifteen bytes!!").unwrap();
    let short_key = short.to_str().unwrap();
    let short_key_error = format!("error: --checksum-key-file {short_key}: the key has 15 bytes; use at least 16");
    let (c, k, s) = (cert_path.to_str().unwrap(), key_path.to_str().unwrap(), schemas.to_str().unwrap());
    let loopback = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tls-key", k], "--tls-cert <TLS_CERT>"),
        (
            vec!["--tls-cert", "/nonexistent/tls.crt", "--tls-key", k, "--schemas", s],
            "--tls-cert/--tls-key: cannot read /nonexistent/tls.crt",
        ),
        (vec!["--tls-cert", c, "--tls-key", wrong_key.to_str().unwrap(), "--schemas", s], "do not belong together"),
        (
            vec!["--tls-cert", c, "--tls-key", k, "--schemas", "/nonexistent"],
            "--schemas: cannot read /nonexistent/index.yaml",
        ),
        (
            vec!["--tls-cert", c, "--tls-key", k, "--schemas", s, "--config", bad_config.to_str().unwrap()],
            "unknown rule ids: image-pined",
        ),
        (
            vec!["--tls-cert", c, "--tls-key", k, "--schemas", s, "--review-timeout", "5"],
            "invalid value '5' for '--review-timeout",
        ),
        (
            vec!["--tls-cert", c, "--tls-key", k, "--schemas", s, "--cluster", "--checksum-key-file", short_key],
            &short_key_error,
        ),
        (vec!["--tls-cert", c, "--tls-key", k, "--schemas", s, "--cluster"], "--checksum-key-file"),
    ];
    for (args, expected) in cases {
        let mut all = args.clone();
        all.extend(loopback);
        let (code, stderr) = start_error(&all);
        assert_ne!(code, 0, "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // The message a person reads, once (its cause is not repeated).
    let (code, stderr) = start_error(&["--tls-cert", "/nonexistent/tls.crt", "--tls-key", k, "--schemas", s]);
    assert_eq!(code, 1);
    let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert_eq!(
        line,
        "error: --tls-cert/--tls-key: cannot read /nonexistent/tls.crt: No such file or directory (os error 2)"
    );
    // Flags of a feature that is off are refused, naming the feature's flag; clap's exit code 2.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let refused: Vec<Case> = vec![
        (
            vec!["--identity", "pod-0"],
            vec![],
            "error: the following required arguments were not provided:\n  --cluster\n",
        ),
        (
            vec![],
            vec![("DX_ADMISSION_IDENTITY", "pod-0")],
            "error: the following required arguments were not provided:\n  --cluster\n",
        ),
        (
            vec!["--rollout-debounce", "5s"],
            vec![],
            "error: the following required arguments were not provided:\n  --cluster\n",
        ),
        (
            vec!["--kubeconfig", "/tmp/kubeconfig"],
            vec![],
            "error: the following required arguments were not provided:\n  <--cluster|--self-managed-certs>\n",
        ),
        (
            vec![],
            vec![("DX_ADMISSION_NAMESPACE", "dx-system")],
            "error: the following required arguments were not provided:\n  <--cluster|--self-managed-certs>\n",
        ),
        (
            vec!["--cert-secret", "tls"],
            vec![],
            "error: the following required arguments were not provided:\n  --cert-dns-names <CERT_DNS_NAMES>\n  --self-managed-certs\n",
        ),
    ];
    for (args, env, expected) in refused {
        let output = Command::new(BIN)
            .args(["serve", "--tls-cert", c, "--tls-key", k])
            .args(&args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.starts_with(expected), "{args:?} {env:?}: {stderr}");
    }
    // --kubeconfig serves --self-managed-certs too: accepted there (it then fails reading the file).
    let (code, stderr) = start_error(&[
        "--tls-cert",
        c,
        "--tls-key",
        k,
        "--schemas",
        s,
        "--self-managed-certs",
        "--cert-dns-names",
        "localhost",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("error: --self-managed-certs: --kubeconfig /nonexistent/kubeconfig: failed to read"),
        "{stderr}"
    );
    let (code, stderr) = start_error(&[
        "--tls-cert",
        c,
        "--tls-key",
        k,
        "--schemas",
        s,
        "--listen",
        &taken,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains(&format!("--listen: cannot listen on {taken}")), "{stderr}");
}

#[test]
fn schema_diff_refuses_a_file_it_cannot_parse_with_exit_2() {
    let temp = tempfile::tempdir().unwrap();
    for version in ["v1", "v2"] {
        std::fs::create_dir_all(temp.path().join(version).join("configmap")).unwrap();
        std::fs::write(temp.path().join(version).join("configmap/dam.json"), r#"{"type": "object"}"#).unwrap();
    }
    std::fs::write(temp.path().join("v2/configmap/dam.json"), "{not json").unwrap();
    let output = Command::new(BIN).args(["schema", "diff", "v1", "v2", "--schemas"]).arg(temp.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "error: {}: not valid JSON: key must be a string at line 1 column 2\n",
            temp.path().join("v2/configmap/dam.json").display()
        )
    );
}

fn check(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let args: Vec<&str> = std::iter::once("check").chain(args.iter().copied()).collect();
    common::binary::command(&args, stdin.unwrap_or(""))
}

#[test]
fn check_exits_0_when_clean_1_when_denied_2_on_bad_input() {
    let (code, out, _) = check(&["-f", "examples/valid"], None);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.ends_with("13 DX objects checked: 0 denied, 13 passed (0 with warnings); 0 not DX, 2 of other kinds\n"),
        "{out}"
    );

    let (code, out, _) = check(&["-f", "examples/broken/dam-as-deployment.yaml"], None);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "examples/broken/dam-as-deployment.yaml: Deployment dx/dx-dam-as-deployment rejected under DX schema v2 (1 problem):\n\
         - metadata.labels[app.kubernetes.io/component]: dam runs as a StatefulSet, not a Deployment [component-kind] fix: deploy core, dam and persistence as StatefulSets and ring-api, content-composer and image-processor as Deployments\n\
         1 DX object checked: 1 denied, 0 passed (0 with warnings); 0 not DX, 0 of other kinds\n"
    );

    let (code, _, err) = check(&["-f", "examples/nothing-here.yaml"], None);
    assert_eq!(code, 2);
    assert!(err.starts_with("error: examples/nothing-here.yaml: "), "{err}");
    let (code, _, err) = check(&["-f", "-"], Some("a: [\n"));
    assert_eq!(code, 2);
    assert!(err.contains("<stdin>: document 1: not valid YAML or JSON"), "{err}");
    let (code, _, err) = check(&[], None);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn check_reads_helm_template_output_from_stdin_as_json_or_yaml() {
    let all = std::fs::read_to_string(repo().join("examples/valid/configmaps.yaml")).unwrap();
    let service = "---\napiVersion: v1\nkind: Service\nmetadata: {name: dx-core}\nspec: {ports: [{port: 80}]}\n";
    let (code, out, _) = check(&["-f", "-", "-o", "json"], Some(&format!("{all}{service}")));
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    let objects = report["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 7);
    assert!(objects.iter().all(|o| o["verdict"] == "allowed" && o["schemaVersion"] == "v2"));

    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [common::examples("broken")
        .into_iter().find(|(f, _)| f == "ring-api-unpinned-no-probe.yaml").unwrap().1]});
    let (code, out, _) = check(&["-f", "-", "--output", "json"], Some(&list.to_string()));
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&out).unwrap();
    let rules: Vec<&str> =
        report["objects"][0]["findings"].as_array().unwrap().iter().map(|f| f["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["image-pinned", "readiness-probe"]);
}

#[test]
fn check_runs_update_rules_against_old_manifests() {
    let temp = tempfile::tempdir().unwrap();
    let old = repo().join("examples/valid/core.yaml");
    let newer = std::fs::read_to_string(&old)
        .unwrap()
        .replace("app.kubernetes.io/version: 95.225.0", "app.kubernetes.io/version: 95.210.0");
    let new_path = temp.path().join("core.yaml");
    std::fs::write(&new_path, newer).unwrap();
    let (code, out, _) = check(&["-f", new_path.to_str().unwrap(), "--old", old.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("- metadata.labels[app.kubernetes.io/version]: 95.225.0 -> 95.210.0 is a downgrade; a rollback needs the backup taken before the update to 95.225.0 [version-downgrade]"), "{out}");
    let (code, _, _) = check(&["-f", new_path.to_str().unwrap()], None);
    assert_eq!(code, 0, "without --old the object is a CREATE");
}

#[test]
fn check_writes_junit_and_sarif_for_ci_systems() {
    let (code, out, _) = check(
        &["-f", "examples/broken/ring-api-unpinned-no-probe.yaml", "-f", "examples/valid/ring-api.yaml", "-o", "junit"],
        None,
    );
    assert_eq!(code, 1);
    assert!(out.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"dx-admission check\" tests=\"2\" failures=\"1\""), "{out}");
    assert!(out.contains("<testcase classname=\"examples/broken/ring-api-unpinned-no-probe.yaml\" name=\"Deployment dx/dx-ring-api-unpinned\">"), "{out}");
    assert!(
        out.contains(
            "<failure message=\"Deployment dx/dx-ring-api-unpinned rejected under DX schema v2 (2 problems):\">"
        ),
        "{out}"
    );
    assert!(
        out.contains("<testcase classname=\"examples/valid/ring-api.yaml\" name=\"Deployment dx/dx-ring-api\"/>"),
        "{out}"
    );

    let (code, out, _) = check(&["-f", "examples/broken/ring-api-unpinned-no-probe.yaml", "-o", "sarif"], None);
    assert_eq!(code, 1);
    let sarif: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "dx-admission");
    assert!(run["tool"]["driver"]["rules"].as_array().unwrap().iter().any(|r| r["id"] == "config-in-use"));
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["ruleId"], "image-pinned");
    assert_eq!(results[0]["level"], "error");
    assert_eq!(
        results[0]["message"]["text"],
        "Deployment dx/dx-ring-api-unpinned: spec.template.spec.containers[0].image: image \"hcl/dx/ring-api:latest\" \
         uses the moving tag latest [image-pinned] fix: use a DX release tag (e.g. :95_CF225) or an @sha256 digest"
    );
    assert_eq!(
        results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "examples/broken/ring-api-unpinned-no-probe.yaml"
    );
    assert_eq!(
        results[0]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
        "Deployment/dx/dx-ring-api-unpinned/spec.template.spec.containers[0].image"
    );
}

fn post_render(stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .current_dir(repo())
        .arg("post-render")
        .env("HELM_NAMESPACE", "dx")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The contract of Helm 3's executable post-renderer (and Helm 4's plugin): manifests on stdin,
/// the same manifests on stdout when clean, a non-zero exit to fail the release.
#[test]
fn post_render_passes_clean_manifests_through_unchanged_and_fails_bad_ones() {
    let clean = std::fs::read_to_string(repo().join("examples/valid/configmaps.yaml")).unwrap()
        + "---\napiVersion: v1\nkind: Service\nmetadata: {name: dx-core}\nspec: {ports: [{port: 80}]}\n";
    let (code, out, err) = post_render(&clean);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, clean, "byte for byte");
    let broken = std::fs::read_to_string(repo().join("examples/broken/dam-as-deployment.yaml")).unwrap();
    let (code, out, err) = post_render(&format!("{clean}---\n{broken}"));
    assert_eq!(code, 1);
    assert_eq!(out, "", "nothing reaches Helm");
    assert_eq!(
        err,
        "dx-admission refused the release before anything was applied:\n\
         Deployment dx/dx-dam-as-deployment rejected under DX schema v2 (1 problem):\n\
         - metadata.labels[app.kubernetes.io/component]: dam runs as a StatefulSet, not a Deployment [component-kind] fix: deploy core, dam and persistence as StatefulSets and ring-api, content-composer and image-processor as Deployments\n"
    );
    let (code, _, err) = post_render("a: [\n");
    assert_eq!(code, 2);
    assert!(err.starts_with("dx-admission: rendered manifests: document 1: not valid YAML or JSON"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_denial_is_logged_for_audit_and_sigterm_under_load_fails_no_review() {
    let dir = tempfile::tempdir().unwrap();
    let schemas = repo().join("schemas");
    let running = serve(dir.path(), &["--dev", "--schemas", schemas.to_str().unwrap(), "--drain-delay", "3s"]);
    let ca = std::fs::read_to_string(dir.path().join("certs/dev/ca.crt")).unwrap();
    let target = common::load::Target::new(running.tls, &ca);

    // A denial names who asked, for what, and which rules said no, on one JSON line.
    let core = common::examples("valid").into_iter().find(|(file, _)| file == "core.yaml").unwrap().1;
    let mut unpinned = core.clone();
    unpinned["spec"]["template"]["spec"]["containers"][0]["image"] = serde_json::json!("hcl/dx/core:latest");
    let mut denied = common::review("CREATE", Some(&unpinned), None);
    denied["request"]["userInfo"]["username"] = "alice@example.com".into();
    let request = common::load::Request::review("/validate", &denied, false);
    common::load::answer(&target, &request).await.expect("a readable denial");
    let uid = denied["request"]["uid"].as_str().unwrap();
    let audit = std::iter::from_fn(|| running.logs.recv_timeout(Duration::from_secs(5)).ok())
        .find(|line| line["message"] == "reviewed" && line["span"]["uid"] == uid)
        .expect("a log line for the denial");
    let span = &audit["span"];
    assert_eq!(audit["level"], "INFO");
    assert_eq!(audit["verdict"], "denied");
    assert_eq!(audit["rules"], "image-pinned");
    assert_eq!(audit["schema_version"], "v2");
    assert_eq!(span["user"], "alice@example.com");
    assert_eq!(span["kind"], "StatefulSet");
    assert_eq!((span["namespace"].as_str(), span["object"].as_str()), (Some("dx"), Some("dx-core")));
    assert_eq!(span["operation"], "CREATE");
    assert_eq!(span["verdict"], "denied");

    // SIGTERM while reviews keep arriving (new connections too): all are answered during the
    // drain delay, then the server exits cleanly.
    let mix: std::sync::Arc<[common::load::Request]> = std::sync::Arc::from(vec![
        common::load::Request::review("/validate", &common::review("CREATE", Some(&core), None), true),
        request,
    ]);
    let load = tokio::spawn(async move {
        common::load::run_reconnecting(
            &target,
            mix,
            4,
            common::load::Pace::Rate(200.0),
            Duration::from_millis(2500),
            10,
        )
        .await
    });
    // SIGTERM once the load is being answered (the server's own count).
    let ops = running.ops;
    let answering = eventually(Duration::from_secs(5), || async {
        common::metric_sum(ops, "dx_admission_reviews_total").await >= 50.0
    });
    assert!(answering.await, "the load runs");
    sigterm(&running.child);
    let outcome = load.await.unwrap();
    assert_eq!(outcome.failed, 0, "{} reviews failed while draining: {:?}", outcome.failed, outcome.failures);
    assert!(outcome.ok > 300, "only {} reviews answered", outcome.ok);
    let mut running = running;
    exits_cleanly_after_the_drain(&mut running).await;
}

#[test]
fn serve_help_documents_every_flag() {
    let output = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = help.lines().collect();
    let mut flags = 0;
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("--") else { continue };
        flags += 1;
        // clap puts the text after the flag, or on the next line when the flag is long.
        let after = rest.split_once("  ").map_or("", |(_, text)| text.trim());
        let next = lines.get(i + 1).map_or("", |l| l.trim());
        let text = if after.is_empty() { next } else { after };
        assert!(!text.is_empty() && !text.starts_with("--"), "--{rest} has no help text");
        assert!(!text.starts_with("[env:"), "--{rest} has only its variable: {text}");
    }
    assert_eq!(flags, 38, "{help}");
    for heading in [
        "TLS and ports:",
        "Limits and timing:",
        "Kubernetes API (with --cluster or --self-managed-certs):",
        "Cluster (--cluster):",
        "Self-managed certificates (--self-managed-certs):",
    ] {
        assert!(lines.contains(&heading), "{heading}");
    }
}

/// curl, sending 5 MB over HTTP/1.1 with `Connection: close` and over HTTP/2, reads the 413 and
/// its reason (a server that answers before reading the body resets curl mid-send instead).
#[test]
fn curl_reads_the_413_over_http1_and_http2() {
    let curl = Command::new("curl").arg("--version").output();
    assert!(curl.is_ok_and(|o| o.status.success()), "this test runs curl: install it (Debian: apt-get install curl)");
    let dir = tempfile::tempdir().unwrap();
    let schemas = repo().join("schemas");
    let running = serve(dir.path(), &["--dev", "--schemas", schemas.to_str().unwrap()]);
    let body = dir.path().join("five-mb.json");
    std::fs::write(&body, vec![b' '; 5 * 1024 * 1024]).unwrap();
    let url = format!("https://{}/validate", running.tls);
    // Plain --http1.1 waits for 100 Continue (refused before sending); "Expect:" sends at once.
    for protocol in [&["--http1.1"][..], &["--http1.1", "-H", "Connection: close", "-H", "Expect:"], &["--http2"]] {
        let output = Command::new("curl")
            .current_dir(dir.path())
            .args(["-sS", "--cacert", "certs/dev/ca.crt", "-H", "Content-Type: application/json"])
            .args(protocol)
            .args(["--data-binary", "@five-mb.json", "-w", " %{http_code} %{http_version}", &url])
            .output()
            .unwrap();
        let version = if protocol[0] == "--http2" { "2" } else { "1.1" };
        assert_eq!(
            (String::from_utf8_lossy(&output.stdout).as_ref(), String::from_utf8_lossy(&output.stderr).as_ref()),
            (
                format!(
                    "{{\"error\":\"too_large\",\"message\":\"request body is larger than the 3145728 byte limit\"}} 413 {version}"
                )
                .as_str(),
                ""
            ),
            "{protocol:?}"
        );
    }
}

/// `dx-admission rules | head -1`, `report ... | less` quit early: the output ends quietly with
/// the command's own exit code, no panic about a broken pipe.
#[test]
fn output_to_a_reader_that_has_gone_ends_quietly() {
    for args in [vec!["rules"], vec!["report", "-f", "examples/valid", "-n", "dx", "-o", "json"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let child = Command::new(BIN)
            .current_dir(repo())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert_eq!((output.status.code(), String::from_utf8_lossy(&output.stderr).as_ref()), (Some(0), ""), "{args:?}");
    }
}
