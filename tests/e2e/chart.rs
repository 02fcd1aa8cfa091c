//! The Helm chart with real Helm: lint, rendering in every mode, values rejected by
//! values.schema.json, installation into the real API server in both certificate modes, and the
//! self-managed certificates made, trusted and renewed against the real API server.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::cluster::text;
use crate::common::{Client, TestServer, eventually, repo, yaml_from_str};
use crate::{Env, cluster_mode};

pub const CHART: &str = "charts/dx-admission";

/// Runs helm; (succeeded, stdout, stderr).
pub fn helm(env: &Env, args: &[&str]) -> (bool, String, String) {
    let output = env.cluster.helm(args);
    let (out, err) = text(&output);
    (output.status.success(), out, err)
}

fn render(env: &Env, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "dx-admission", CHART, "--namespace", "dx-system"];
    args.extend(extra);
    let (ok, out, err) = helm(env, &args);
    assert!(ok, "helm template {extra:?}: {err}");
    yaml_from_str(&out)
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects.iter().find(|o| o["kind"] == kind).unwrap_or_else(|| panic!("no {kind} rendered"))
}

pub async fn the_chart_lints_clean_in_every_mode(env: &mut Env) {
    for values in [
        vec![],
        vec!["--set", "certificates.mode=self-managed"],
        vec![
            "--set",
            "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.grafanaDashboard.enabled=true",
        ],
        vec!["--set", "rollout.enabled=false,schemas.configMap=dx-schemas"],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend(&values);
        let (ok, out, err) = helm(env, &args);
        assert!(ok, "{values:?}: {out}{err}");
        assert!(out.contains("1 chart(s) linted, 0 chart(s) failed"), "{out}");
        assert!(!out.contains("[WARNING]") && !out.contains("[ERROR]"), "{values:?}: {out}");
    }
}

/// The binary is started with exactly the arguments and variables the chart renders, in each
/// mode: its flags must parse (a variable of a feature that is off is refused with exit 2), so
/// start-up gets as far as the first file only the pod has, the mounted policy file.
pub async fn the_binary_accepts_what_the_chart_renders_in_every_mode(env: &mut Env) {
    for values in [
        "rollout.enabled=true,certificates.mode=cert-manager",
        "rollout.enabled=false,certificates.mode=cert-manager",
        "rollout.enabled=true,certificates.mode=self-managed",
        "rollout.enabled=false,certificates.mode=self-managed",
    ] {
        let objects = render(env, &["--set", values]);
        let container = &find(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let variables: Vec<(String, String)> = container["env"]
            .as_array()
            .map(|list| {
                // The kubelet fills fieldRefs; stand-ins of the same kind do here.
                list.iter().map(|v| (v["name"].as_str().unwrap().to_owned(), "dx-admission-0".to_owned())).collect()
            })
            .unwrap_or_default();
        let names: Vec<&str> = variables.iter().map(|(n, _)| n.as_str()).collect();
        let expected: &[&str] = match values {
            v if v.starts_with("rollout.enabled=true") => &["DX_ADMISSION_NAMESPACE", "DX_ADMISSION_IDENTITY"],
            v if v.ends_with("self-managed") => &["DX_ADMISSION_NAMESPACE"],
            _ => &[],
        };
        assert_eq!(names, expected, "{values}");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_dx-admission"))
            .args(&args)
            .env_clear()
            .envs(variables)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{values}: {args:?}: {stderr}");
        let line = stderr.lines().find(|l| l.starts_with("error: "));
        assert_eq!(
            line,
            Some("error: --config /etc/dx-admission/policy/policy.yaml: No such file or directory (os error 2)"),
            "{values}: {stderr}"
        );
    }
}

/// `serve --dev` prints the webhooks the chart registers, field by field, for the default
/// selector and another: only where they are sent (a URL, not the Service) and the chart's own
/// namespace, which it also excludes, differ.
pub async fn serve_dev_prints_the_webhooks_the_chart_registers(env: &mut Env) {
    use dx_admission::policy::settings::Selector;
    let other =
        Selector { part_of_label: "example.com/suite".into(), part_of_value: "hcl-dx".into(), ..Selector::default() };
    for (selector, values) in [
        (Selector::default(), vec![]),
        (other, vec!["--set", "policy.selector.partOfLabel=example.com/suite,policy.selector.partOfValue=hcl-dx"]),
    ] {
        let chart = render(env, &values);
        let printed = dx_admission::dev::webhook_configurations("https://127.0.0.1:8443", b"ca", &selector, true);
        let printed = yaml_from_str(&printed);
        for kind in ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"] {
            let webhooks = |objects: &[Value]| -> Vec<Value> {
                let mut webhooks = find(objects, kind)["webhooks"].as_array().unwrap().clone();
                for webhook in &mut webhooks {
                    webhook.as_object_mut().unwrap().remove("clientConfig");
                }
                webhooks
            };
            let (mut from_chart, mut from_dev) = (webhooks(&chart), webhooks(&printed));
            assert_eq!(from_chart.len(), from_dev.len(), "{kind}");
            for (chart, dev) in from_chart.iter_mut().zip(&mut from_dev) {
                let excluded = |w: &mut Value| w["namespaceSelector"]["matchExpressions"][0]["values"].take();
                assert_eq!(excluded(chart), serde_json::json!(["kube-system", "dx-system"]), "{kind}");
                assert_eq!(excluded(dev), serde_json::json!(["kube-system"]), "{kind}");
            }
            assert_eq!(from_chart, from_dev, "{kind} with {values:?}");
        }
        let objects = &find(&printed, "ValidatingWebhookConfiguration")["webhooks"][0]["objectSelector"];
        assert_eq!(objects["matchLabels"][&selector.part_of_label], selector.part_of_value.as_str());
    }
}

pub async fn the_chart_renders_safe_defaults(env: &mut Env) {
    let objects = render(env, &[]);
    // Webhook registrations.
    let validating = find(&objects, "ValidatingWebhookConfiguration");
    let mutating = find(&objects, "MutatingWebhookConfiguration");
    for configuration in [validating, mutating] {
        assert_eq!(
            configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "dx-system/dx-admission-root"
        );
        for hook in configuration["webhooks"].as_array().unwrap() {
            assert_eq!(hook["admissionReviewVersions"], serde_json::json!(["v1"]));
            assert_eq!(hook["sideEffects"], "None");
            let excluded = &hook["namespaceSelector"]["matchExpressions"][0];
            assert_eq!(excluded["operator"], "NotIn");
            assert_eq!(
                excluded["values"],
                serde_json::json!(["kube-system", "dx-system"]),
                "never blocks its own recovery"
            );
            assert_eq!(hook["clientConfig"]["service"]["name"], "dx-admission");
        }
    }
    let hooks = validating["webhooks"].as_array().unwrap();
    assert_eq!(hooks[0]["name"], "validate.dx-admission.hcl.com");
    assert_eq!(hooks[0]["failurePolicy"], "Fail");
    assert_eq!(hooks[0]["timeoutSeconds"], 10);
    assert_eq!(hooks[0]["objectSelector"]["matchLabels"]["app.kubernetes.io/part-of"], "dx");
    assert_eq!(hooks[0]["clientConfig"]["service"]["path"], "/validate");
    assert_eq!(hooks[1]["name"], "guard.dx-admission.hcl.com");
    assert_eq!(hooks[1]["failurePolicy"], "Ignore");
    assert!(hooks[1].get("objectSelector").is_none(), "the guard sees unlabelled Secrets too");
    assert_eq!(hooks[1]["rules"][0]["operations"], serde_json::json!(["DELETE"]));
    let mutate = &mutating["webhooks"][0];
    assert_eq!(mutate["reinvocationPolicy"], "IfNeeded");
    assert_eq!(mutate["clientConfig"]["service"]["path"], "/mutate");
    // The Deployment: highly available, locked down, probed on the metrics port.
    let deployment = find(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(
        container["resources"]["limits"]["memory"].is_string() && container["resources"]["requests"]["cpu"].is_string()
    );
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    for expected in [
        "serve",
        "--cluster",
        "--checksum-key-file=/etc/dx-admission/checksum/key",
        "--schemas=/usr/share/dx-admission/schemas",
    ] {
        assert!(args.contains(&expected), "{args:?} lacks {expected}");
    }
    assert_eq!(find(&objects, "PodDisruptionBudget")["spec"]["minAvailable"], 1);
    // cert-manager mode: the issuer chain and the Certificate for the Service's names.
    let certificate =
        objects.iter().find(|o| o["kind"] == "Certificate" && o["metadata"]["name"] == "dx-admission").unwrap();
    assert_eq!(certificate["spec"]["secretName"], "dx-admission-tls");
    assert_eq!(certificate["spec"]["dnsNames"][2], "dx-admission.dx-system.svc");
    // The root signs the issuing CA, which issues the serving certificate.
    let issuer_of = |name: &str| {
        let certificate = objects.iter().find(|o| o["kind"] == "Certificate" && o["metadata"]["name"] == name);
        certificate.map(|c| c["spec"]["issuerRef"]["name"].as_str().unwrap().to_owned())
    };
    assert_eq!(issuer_of("dx-admission").as_deref(), Some("dx-admission-ca"));
    assert_eq!(issuer_of("dx-admission-ca").as_deref(), Some("dx-admission-root"));
    assert_eq!(issuer_of("dx-admission-root").as_deref(), Some("dx-admission-selfsigned"));
    assert_eq!(objects.iter().filter(|o| o["kind"] == "Issuer").count(), 3);
    // Least privilege: reads cluster-wide, patches only workloads, the Lease by name.
    let cluster_role = objects.iter().find(|o| o["kind"] == "ClusterRole").unwrap();
    assert_eq!(
        cluster_role["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["statefulsets", "deployments"], "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch"]},
            {"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshots"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list", "watch"]},
            {"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"], "verbs": ["list", "create", "update", "delete"]}
        ])
    );
    assert!(!objects.iter().any(|o| o["kind"] == "CustomResourceDefinition"), "the PolicyReport CRD only when asked");
    let role = find(&objects, "Role");
    assert_eq!(role["rules"][1]["resourceNames"], serde_json::json!(["dx-admission-rollout"]));
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert!(!objects.iter().any(|o| o["kind"] == kind), "{kind} is off by default");
    }

    // Self-managed mode: no cert-manager objects or annotations, and the rights to keep its own.
    let objects = render(env, &["--set", "certificates.mode=self-managed"]);
    assert!(!objects.iter().any(|o| o["kind"] == "Certificate" || o["kind"] == "Issuer"));
    assert!(find(&objects, "ValidatingWebhookConfiguration")["metadata"].get("annotations").is_none());
    let args = find(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--self-managed-certs"), "{args}");
    assert!(args.contains("--cert-dns-names=dx-admission,dx-admission.dx-system,dx-admission.dx-system.svc,dx-admission.dx-system.svc.cluster.local"), "{args}");
    let webhooks_role = objects
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == "dx-admission-webhooks")
        .unwrap();
    assert_eq!(webhooks_role["rules"][0]["resourceNames"], serde_json::json!(["dx-admission"]));

    // The PolicyReport CRD, when asked for, kept on uninstall (other tools' reports live in it).
    let objects = render(env, &["--set", "reports.installCRD=true"]);
    let crd = find(&objects, "CustomResourceDefinition");
    assert_eq!(crd["metadata"]["name"], "policyreports.wgpolicyk8s.io");
    assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    assert_eq!(crd["spec"]["versions"][0]["name"], "v1alpha2");

    // Monitoring, when asked for.
    let objects = render(
        env,
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.grafanaDashboard.enabled=true",
        ],
    );
    let rules = &find(&objects, "PrometheusRule")["spec"]["groups"][0]["rules"];
    let alerts: Vec<&str> = rules.as_array().unwrap().iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(
        alerts,
        [
            "DxAdmissionCertificateExpiring",
            "DxAdmissionReloadFailures",
            "DxAdmissionDenialSpike",
            "DxAdmissionSlowReviews",
            "DxAdmissionRolloutFailures",
            "DxAdmissionBackupStale",
            "DxAdmissionExistingObjectsDenied",
            "DxAdmissionStaleConfig",
            "DxAdmissionPodsOnOldConfig",
            "DxAdmissionRolloutStuck",
            "DxAdmissionApiServerUnreachable"
        ]
    );
    let stuck = rules.as_array().unwrap().iter().find(|r| r["alert"] == "DxAdmissionRolloutStuck").unwrap();
    assert_eq!(
        stuck["expr"],
        r#"max by (namespace, workload) (dx_admission_rollout_stuck{service="dx-admission"}) == 1"#
    );
    let dashboard =
        objects.iter().find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "dx-admission-dashboard").unwrap();
    let json: Value = serde_json::from_str(dashboard["data"]["dx-admission.json"].as_str().unwrap()).unwrap();
    assert_eq!(json["title"], "dx-admission");
    let panels: Vec<&str> = json["panels"].as_array().unwrap().iter().map(|p| p["title"].as_str().unwrap()).collect();
    assert_eq!(
        panels[8..],
        [
            "Existing objects with findings (background evaluation)",
            "Workloads on stale config",
            "Pods on old config",
            "Stuck rollouts"
        ]
    );
    assert_eq!(find(&objects, "ServiceMonitor")["spec"]["endpoints"][0]["port"], "metrics");
}

pub async fn values_schema_rejects_wrong_values(env: &mut Env) {
    let cases: Vec<(&str, &str)> = vec![
        ("replicaCount=0", "at '/replicaCount': minimum: got 0, want 1"),
        ("replicaCount=two", "at '/replicaCount': got string, want integer"),
        ("webhook.failurePolicy=Sometimes", "at '/webhook/failurePolicy': value must be one of 'Fail', 'Ignore'"),
        ("webhook.timeoutSeconds=60", "at '/webhook/timeoutSeconds': maximum: got 60, want 30"),
        ("certificates.mode=manual", "at '/certificates/mode': value must be one of 'cert-manager', 'self-managed'"),
        ("policy.mode=strict", "at '/policy/mode': value must be one of 'enforce', 'warn'"),
        (
            "policy.rules.image-pinned=block",
            "at '/policy/rules/image-pinned': value must be one of 'deny', 'warn', 'audit'",
        ),
        ("resources.limits.memory=2GB", "at '/resources/limits/memory': '2GB' does not match pattern"),
        ("rollout.debounce=2 seconds", "at '/rollout/debounce': '2 seconds' does not match pattern"),
        ("reports.interval=often", "at '/reports/interval': 'often' does not match pattern"),
        ("reports.installCRD=yes", "at '/reports/installCRD': got string, want boolean"),
        (
            "webhook.excludeNamespaces[0]=Kube_System",
            "at '/webhook/excludeNamespaces/0': 'Kube_System' does not match pattern",
        ),
        (
            "policy.storage.coreProfileMountPath=opt/HCL",
            "at '/policy/storage/coreProfileMountPath': 'opt/HCL' does not match pattern '^/'",
        ),
        (
            "image.pullPolicy=Sometimes",
            "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
        ),
        ("replicas=3", "additional properties 'replicas' not allowed"),
        ("metrics.prometheusRule.denialRatio=2", "at '/metrics/prometheusRule/denialRatio': maximum: got 2, want 1"),
    ];
    for (value, expected) in cases {
        let (ok, _, err) = helm(env, &["template", "dx-admission", CHART, "--set", value]);
        assert!(!ok, "{value} was accepted");
        assert!(err.contains("values don't meet the specifications of the schema"), "{value}: {err}");
        assert!(err.contains(expected), "{value}: {err}");
    }
}

pub async fn the_chart_installs_into_the_api_server_in_both_modes(env: &mut Env) {
    // cert-manager's CRDs are installed and its controller runs (see `cluster`).
    // No webhook pod can run here: Ignore keeps the installed registrations from blocking the
    // rest of the suite until they are removed again.
    for (release, mode) in [("dx-admission-cm", "cert-manager"), ("dx-admission-self", "self-managed")] {
        let namespace = format!("{release}-system");
        let (ok, out, err) = helm(
            env,
            &[
                "install",
                release,
                CHART,
                "--namespace",
                &namespace,
                "--create-namespace",
                "--wait=hookOnly",
                "--set",
                &format!("certificates.mode={mode}"),
                "--set",
                "webhook.failurePolicy=Ignore",
                "--set",
                "metrics.grafanaDashboard.enabled=true",
            ],
        );
        assert!(ok, "{mode}: {out}{err}");
        assert!(out.contains("STATUS: deployed"), "{out}");
        assert!(out.contains(&format!("Certificates:     {mode}")), "NOTES: {out}");
        let (ok, out, _) =
            env.kubectl(&["get", "deployment,service,pdb,serviceaccount,configmap", "-n", &namespace, "-o", "name"]);
        assert!(ok);
        for object in ["deployment.apps/", "service/", "poddisruptionbudget.policy/", "serviceaccount/", "configmap/"] {
            assert!(out.contains(object), "{mode}: {object} missing in {out}");
        }
        let (ok, _, err) = env.kubectl(&["get", "validatingwebhookconfiguration", release]);
        assert!(ok, "{err}");
        if mode == "cert-manager" {
            let (ok, out, err) = env.kubectl(&[
                "get",
                "certificates.cert-manager.io,issuers.cert-manager.io",
                "-n",
                &namespace,
                "-o",
                "name",
            ]);
            assert!(ok, "{err}");
            let mut names: Vec<&str> = out.lines().collect();
            names.sort_unstable();
            assert_eq!(
                names,
                [
                    "certificate.cert-manager.io/dx-admission-cm",
                    "certificate.cert-manager.io/dx-admission-cm-ca",
                    "certificate.cert-manager.io/dx-admission-cm-root",
                    "issuer.cert-manager.io/dx-admission-cm-ca",
                    "issuer.cert-manager.io/dx-admission-cm-root",
                    "issuer.cert-manager.io/dx-admission-cm-selfsigned",
                ],
                "{out}"
            );
        }
        let (ok, _, err) = helm(env, &["uninstall", release, "--namespace", &namespace]);
        assert!(ok, "{err}");
    }
    // The plain manifests for kubectl are the chart rendered as documented, and the API server
    // accepts them.
    let committed = std::fs::read_to_string(repo().join("certs/kubectl/dx-admission.yaml")).unwrap();
    let command = committed.lines().nth(1).unwrap().trim_start_matches("#").trim().to_owned();
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let (ok, rendered, err) = helm(env, &args);
    assert!(ok, "{command}: {err}");
    let body: String = committed.lines().skip(3).map(|l| format!("{l}\n")).collect();
    assert!(body == rendered, "certs/kubectl/dx-admission.yaml is stale: render it again with `{command}`");
    let (ok, _, err) = env.kubectl(&["create", "namespace", "dx-system"]);
    assert!(ok, "{err}");
    let (ok, out, err) = env.kubectl(&["apply", "--dry-run=server", "-f", "certs/kubectl/dx-admission.yaml"]);
    assert!(ok, "{err}");
    // The webhook configurations share their name with the ones this suite registered: "configured".
    assert!(out.contains("deployment.apps/dx-admission created (server dry run)"), "{out}");
    assert!(out.contains("validatingwebhookconfiguration.admissionregistration.k8s.io/dx-admission "), "{out}");
    assert!(out.contains("certificate.cert-manager.io/dx-admission created (server dry run)"), "{out}");
}

pub async fn self_managed_certificates_are_made_trusted_and_renewed(env: &mut Env) {
    const NS: &str = "e2e-certs";
    let (ok, _, err) = env.kubectl(&["create", "namespace", NS]);
    assert!(ok, "{err}");
    // A replica in self-managed mode: it serves from a CA of its own making.
    let kubeconfig = env.cluster.kubeconfig.clone();
    let server = TestServer::start_with(move |config| {
        config.cluster = Some(cluster_mode(&kubeconfig, "replica-certs"));
        config.self_managed = Some(dx_admission::cluster::certs::SelfManagedConfig {
            kubeconfig: Some(kubeconfig.clone()),
            namespace: NS.into(),
            secret: "dx-admission-tls".into(),
            webhook_configurations: "dx-admission".into(),
            dns_names: vec!["127.0.0.1".into(), "localhost".into()],
            // Short lives, so renewal and a CA roll happen within the test.
            ca_validity: Duration::from_secs(40),
            cert_validity: Duration::from_secs(16),
            renew_before: Duration::from_secs(8),
            cert_path: config.tls_cert.clone(),
            key_path: config.tls_key.clone(),
        });
    })
    .await;
    let secret = |env: &Env| -> Value {
        let (ok, out, err) = env.kubectl(&["get", "secret", "dx-admission-tls", "-n", NS, "-o", "json"]);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let decode = |value: &Value| {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(value.as_str().unwrap()).unwrap()).unwrap()
    };
    let stored = secret(env);
    let keys: Vec<&String> = stored["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
    let ca = decode(&stored["data"]["ca.crt"]);
    // It serves what it stored.
    let client = Client { addr: server.tls_addr, ca_pem: ca.clone() };
    assert_eq!(client.serial().await, crate::common::serial_of_pem(&decode(&stored["data"]["tls.crt"])));

    // Point the registrations at it with an empty caBundle: it fills in its own CA, and the API
    // server then trusts it.
    let previous = env.webhook.replace(server).expect("webhook");
    env.register("");
    let bundle_of = |env: &Env| {
        let (_, out, _) = env.kubectl(&[
            "get",
            "validatingwebhookconfiguration",
            "dx-admission",
            "-o",
            "jsonpath={.webhooks[0].clientConfig.caBundle}",
        ]);
        out
    };
    let published = eventually(Duration::from_secs(10), || async { !bundle_of(env).is_empty() }).await;
    assert!(published, "the caBundle is filled in");
    let (_, mutating, _) = env.kubectl(&[
        "get",
        "mutatingwebhookconfiguration",
        "dx-admission",
        "-o",
        "jsonpath={.webhooks[0].clientConfig.caBundle}",
    ]);
    assert_eq!(mutating, bundle_of(env));
    let manifest = std::fs::read_to_string(repo().join("examples/broken/ring-api-unpinned-no-probe.yaml"))
        .unwrap()
        .replace("namespace: dx", &format!("namespace: {NS}"));

    let answered_once = |env: &Env| {
        let output = env.cluster.kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&manifest));
        text(&output)
            .1
            .contains("denied the request: Deployment e2e-certs/dx-ring-api-unpinned rejected under DX schema v2")
    };
    // The API server picks up the published caBundle asynchronously: wait for the first answer.
    let trusted = eventually(Duration::from_secs(15), || {
        let ok = answered_once(env);
        async move { ok }
    })
    .await;
    assert!(trusted, "the API server trusts the self-managed CA");
    // Through renewals and a CA roll, every request is answered (the denial proves the webhook ran).
    let serials = std::collections::BTreeSet::from([client.serial().await]);
    let mut serials = serials;
    let (mut bundles, mut failures, mut answered) = (std::collections::BTreeSet::new(), Vec::new(), 0);
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(50) {
        let output = env.cluster.kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&manifest));
        let (_, err) = text(&output);
        if err.contains("denied the request: Deployment e2e-certs/dx-ring-api-unpinned rejected under DX schema v2") {
            answered += 1;
        } else {
            failures.push(err);
        }
        let stored = secret(env);
        let bundle = decode(&stored["data"]["ca.crt"]);
        bundles.insert(bundle.matches("BEGIN CERTIFICATE").count());
        let trusting = Client { addr: env.webhook().tls_addr, ca_pem: bundle };
        if let Ok(stream) = trusting.connect().await {
            serials.insert(crate::common::serial_of(&stream));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "e2e: self-managed certificates: {answered} reviews answered, {} failed, {} serving certificates, bundle sizes {bundles:?}",
        failures.len(),
        serials.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(serials.len() >= 3, "the serving certificate was renewed ({} seen)", serials.len());
    assert!(bundles.contains(&2), "the CA roll kept both CAs in the bundle");
    assert!(bundles.contains(&1));

    // Hand the registrations back to the previous webhook, once the self-managed replica has
    // stopped: while it runs it keeps writing its own CA into their caBundle.
    let ca = previous.pki.ca_pem.clone();
    let current = env.webhook.replace(previous).expect("self-managed replica");
    if let Some(server) = current.server {
        server.shutdown().await;
    }
    env.register(&ca);
    let handed_back = eventually(Duration::from_secs(15), || {
        let ok = answered_once(env);
        async move { ok }
    })
    .await;
    assert!(handed_back, "the previous webhook answers the API server again");
}

/// The real binary with the self-managed flags the chart passes: it makes its CA and pair in the
/// Secret, serves that pair, fills the caBundle of the configuration it is named, and the API
/// server then calls it.
pub async fn the_binary_manages_its_own_certificates_with_its_flags(env: &mut Env) {
    const NS: &str = "e2e-self";
    let (ok, _, err) = env.kubectl(&["create", "namespace", NS]);
    assert!(ok, "{err}");
    let dir = env.cluster.dir.path().join(NS);
    // The chart's emptyDir for the pair.
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let kubeconfig = env.cluster.kubeconfig.to_str().unwrap().to_owned();
    let schemas = repo().join("schemas");
    let running = crate::common::binary::serve(
        &dir,
        &[
            "--self-managed-certs",
            "--tls-cert",
            "certs/tls.crt",
            "--tls-key",
            "certs/tls.key",
            "--cert-dns-names",
            "127.0.0.1,localhost",
            "--cert-secret",
            "dx-self-tls",
            "--webhook-configurations",
            "e2e-self",
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            NS,
            "--schemas",
            schemas.to_str().unwrap(),
        ],
    );
    let (ok, out, err) = env.kubectl(&["get", "secret", "dx-self-tls", "-n", NS, "-o", "json"]);
    assert!(ok, "{err}");
    let stored: Value = serde_json::from_str(&out).unwrap();
    let keys: Vec<&String> = stored["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
    let decode = |key: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD.decode(stored["data"][key].as_str().unwrap()).unwrap(),
        )
        .unwrap()
    };
    let client = Client { addr: running.tls, ca_pem: decode("ca.crt") };
    assert_eq!(client.serial().await, crate::common::serial_of_pem(&decode("tls.crt")), "it serves the stored pair");
    assert_eq!(std::fs::read_to_string(dir.join("certs/tls.crt")).unwrap(), decode("tls.crt"), "--tls-cert holds it");
    let config = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: e2e-self\n\
         webhooks:\n  - name: self.e2e.dx-admission.hcl.com\n    admissionReviewVersions: [v1]\n    sideEffects: None\n    failurePolicy: Fail\n\
         \x20   clientConfig:\n      url: https://{}/validate\n\
         \x20   rules:\n      - apiGroups: [apps]\n        apiVersions: [v1]\n        operations: [CREATE]\n        resources: [deployments]\n\
         \x20   namespaceSelector:\n      matchLabels:\n        kubernetes.io/metadata.name: {NS}\n",
        running.tls
    );
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &config);
    assert!(ok, "{err}");
    let bundle = || {
        let (_, out, _) = env.kubectl(&[
            "get",
            "validatingwebhookconfiguration",
            "e2e-self",
            "-o",
            "jsonpath={.webhooks[0].clientConfig.caBundle}",
        ]);
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(out.trim()).unwrap_or_default())
            .unwrap_or_default()
    };
    let filled = eventually(Duration::from_secs(20), || {
        let filled = bundle() == decode("ca.crt");
        async move { filled }
    });
    assert!(filled.await, "the binary fills in the caBundle");
    let manifest = std::fs::read_to_string(repo().join("examples/broken/ring-api-unpinned-no-probe.yaml"))
        .unwrap()
        .replace("namespace: dx", &format!("namespace: {NS}"));
    let called = eventually(Duration::from_secs(15), || {
        let output = env.cluster.kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&manifest));
        let denied = text(&output).1.contains(
            "admission webhook \"self.e2e.dx-admission.hcl.com\" denied the request: Deployment e2e-self/dx-ring-api-unpinned rejected",
        );
        async move { denied }
    });
    assert!(called.await, "the API server trusts the self-made CA and calls the binary");
    let (ok, _, err) = env.kubectl(&["delete", "validatingwebhookconfiguration", "e2e-self"]);
    assert!(ok, "{err}");
    drop(running);
}
