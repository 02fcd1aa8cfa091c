//! The image users run, called by the real API server: the container serves on a loopback port
//! and a webhook configuration of its own sends it the release namespace's objects, which the
//! chart's configurations leave alone. Reported ignored without an image (see `tests/image.rs`).

use crate::common::docker::Container;
use crate::common::{Pki, SecretMount};
use crate::replicas::NAMESPACE;
use crate::{Env, base64_encode, in_namespace};

pub async fn the_api_server_calls_the_containerized_webhook(env: &mut Env) {
    use std::os::unix::fs::PermissionsExt;
    let dir = env.cluster.dir.path().join("image-tls");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pki = Pki::new("e2e image CA");
    let (cert, key) = pki.issue();
    let _mount = SecretMount::new(&dir, &cert, &key);
    let container = Container::serve(
        &[format!("{}:/etc/dx-admission/tls:ro", dir.display())],
        &["--tls-cert=/etc/dx-admission/tls/tls.crt", "--tls-key=/etc/dx-admission/tls/tls.key"],
    )
    .await;
    let config = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: e2e-image\n\
         webhooks:\n  - name: image.e2e.dx-admission.hcl.com\n    admissionReviewVersions: [v1]\n    sideEffects: None\n    failurePolicy: Fail\n\
         \x20   clientConfig:\n      url: https://{}/validate\n      caBundle: {}\n\
         \x20   rules:\n      - apiGroups: [\"\", apps]\n        apiVersions: [v1]\n        operations: [CREATE, UPDATE]\n        resources: [configmaps, deployments]\n\
         \x20   namespaceSelector:\n      matchLabels:\n        kubernetes.io/metadata.name: {NAMESPACE}\n",
        container.tls,
        base64_encode(&pki.ca_pem)
    );
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &config);
    assert!(ok, "{err}");
    let broken = in_namespace("examples/broken/ring-api-unpinned-no-probe.yaml", NAMESPACE);
    let called = crate::common::eventually(std::time::Duration::from_secs(15), || {
        let (ok, _, err) = env.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &broken);
        async move { !ok && err.contains("admission webhook \"image.e2e.dx-admission.hcl.com\" denied the request") }
    });
    assert!(called.await, "the API server calls the container; its log:\n{}", container.logs());
    let (ok, _, err) = env.kubectl_stdin(&["apply", "-f", "-"], &broken);
    assert!(!ok);
    assert_eq!(
        err,
        "Error from server (Forbidden): error when creating \"STDIN\": admission webhook \"image.e2e.dx-admission.hcl.com\" denied the request: \
         Deployment dx-system/dx-ring-api-unpinned rejected under DX schema v2 (2 problems):\n\
         - spec.template.spec.containers[0].image: image \"hcl/dx/ring-api:latest\" uses the moving tag latest [image-pinned] fix: use a DX release tag (e.g. :95_CF225) or an @sha256 digest\n\
         - spec.template.spec.containers[0].readinessProbe: container \"ring-api\" has no readiness probe [readiness-probe] fix: add a readinessProbe (e.g. an httpGet on the application's health endpoint)\n"
    );
    let valid = in_namespace("examples/valid/ring-api.yaml", NAMESPACE);
    let (ok, out, err) = env.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &valid);
    assert!(ok, "{err}");
    assert_eq!(out, "deployment.apps/dx-ring-api created (server dry run)\n");
    let (ok, _, err) = env.kubectl(&["delete", "validatingwebhookconfiguration", "e2e-image"]);
    assert!(ok, "{err}");
}
