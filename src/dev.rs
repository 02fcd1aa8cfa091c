//! `serve --dev`: a development CA and a serving certificate for localhost, generated with rcgen
//! into `certs/dev/` (reused while valid), and the webhook configurations that point at them.

use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::policy::settings::Selector;
use crate::server::tls::load_pair;

pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

pub const CHECKSUM_KEY_FILE: &str = "checksum.key";

/// The dev HMAC key for Secret checksums in `dir`, generated once (32 random bytes, hex).
pub fn ensure_checksum_key(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(CHECKSUM_KEY_FILE);
    if let Ok(key) = std::fs::read(&path) {
        return Ok(key.trim_ascii().to_vec());
    }
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("no system randomness for the dev checksum key"))?;
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(dir)?;
    write_private(&path, &key)?;
    Ok(key.into_bytes())
}

/// Dev certificates are renewed when they have less than this left.
const MIN_REMAINING: Duration = Duration::days(7);

/// The files of a dev certificate set.
pub struct DevCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Whether they were generated now (rather than reused).
    pub generated: bool,
}

/// Reuses the dev certificates in `dir` if they are valid for a week more, else writes new ones.
pub fn ensure(dir: &Path) -> anyhow::Result<DevCerts> {
    let certs =
        DevCerts { ca: dir.join(CA_FILE), cert: dir.join(CERT_FILE), key: dir.join(KEY_FILE), generated: false };
    if reusable(&certs) {
        return Ok(certs);
    }
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("--dev-cert-dir {}: {e}", dir.display()))?;
    let (ca_pem, cert_pem, key_pem) = generate(OffsetDateTime::now_utc())?;
    std::fs::write(&certs.ca, ca_pem)?;
    std::fs::write(&certs.cert, cert_pem)?;
    write_private(&certs.key, &key_pem)?;
    Ok(DevCerts { generated: true, ..certs })
}

fn reusable(certs: &DevCerts) -> bool {
    if !certs.ca.exists() {
        return false;
    }
    match load_pair(&certs.cert, &certs.key) {
        Ok(pair) => pair.not_after > (OffsetDateTime::now_utc() + MIN_REMAINING).unix_timestamp(),
        Err(_) => false,
    }
}

#[cfg(unix)]
fn write_private(path: &Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(pem.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, pem: &str) -> std::io::Result<()> {
    std::fs::write(path, pem)
}

/// A CA (valid 1 year) and a serving certificate for localhost and 127.0.0.1 (90 days).
/// Returns PEM: CA certificate, serving certificate, serving key.
pub fn generate(now: OffsetDateTime) -> anyhow::Result<(String, String, String)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "dx-admission dev CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::minutes(5);
    ca.not_after = now + Duration::days(365);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    leaf.distinguished_name.push(DnType::CommonName, "dx-admission (dev)");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - Duration::minutes(5);
    leaf.not_after = now + Duration::days(90);
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

/// Validating and mutating webhook configurations pointing at `base_url` by `url:`: field by
/// field what the chart registers (`charts/dx-admission/templates/webhooks.yaml`; the end-to-end
/// suite compares the two), with the object selector of the policy file's `selector`. The delete
/// guard is registered only with `guard` (`--cluster`): without the workload index its rule could
/// only say, on every delete, that it did not judge.
pub fn webhook_configurations(base_url: &str, ca_pem: &[u8], selector: &Selector, guard: bool) -> String {
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let client = |path: &str| json!({"url": format!("{base_url}{path}"), "caBundle": ca_bundle});
    // Every webhook skips kube-system, so dx-admission can never block the cluster's recovery.
    let namespaces = json!({"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}
    ]});
    let objects = json!({"matchLabels": {selector.part_of_label.clone(): selector.part_of_value.clone()}});
    let rule = |group: &str, operations: &[&str], resources: &[&str]| json!({"apiGroups": [group], "apiVersions": ["v1"], "operations": operations, "resources": resources, "scope": "Namespaced"});
    let webhook = |name: &str, path: &str, failure: &str, timeout: u32, rules: Vec<Value>| {
        json!({
            "name": name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": failure,
            "timeoutSeconds": timeout,
            "matchPolicy": "Equivalent",
            "clientConfig": client(path),
            "rules": rules,
            "namespaceSelector": namespaces,
        })
    };
    let workloads = || rule("apps", &["CREATE", "UPDATE"], &["statefulsets", "deployments"]);
    let mut validate = webhook(
        "validate.dx-admission.hcl.com",
        "/validate",
        "Fail",
        10,
        vec![rule("", &["CREATE", "UPDATE"], &["configmaps"]), workloads()],
    );
    validate["objectSelector"] = objects.clone();
    let mut validating = vec![validate];
    if guard {
        // Any ConfigMap or Secret may be needed by a DX workload, labelled or not: no object
        // selector, and Ignore, so an outage never blocks deleting unrelated ones. Deleted DX
        // workloads pass here too, to be categorised as removals (R), never refused.
        let rules = vec![
            rule("", &["DELETE"], &["configmaps", "secrets"]),
            rule("apps", &["DELETE"], &["statefulsets", "deployments"]),
        ];
        validating.push(webhook("guard.dx-admission.hcl.com", "/validate", "Ignore", 5, rules));
    }
    let mut mutate = webhook("mutate.dx-admission.hcl.com", "/mutate", "Fail", 10, vec![workloads()]);
    mutate["reinvocationPolicy"] = json!("IfNeeded");
    mutate["objectSelector"] = objects;
    let configuration = |kind: &str, webhooks: Vec<Value>| {
        let value = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": "dx-admission"},
            "webhooks": webhooks,
        });
        // A tree of strings, numbers and lists: serialising it cannot fail.
        serde_yaml_ng::to_string(&value).unwrap_or_default()
    };
    format!(
        "{}---\n{}",
        configuration("ValidatingWebhookConfiguration", validating),
        configuration("MutatingWebhookConfiguration", vec![mutate])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_loads_and_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path()).unwrap();
        assert!(first.generated);
        let pair = load_pair(&first.cert, &first.key).unwrap();
        let second = ensure(dir.path()).unwrap();
        assert!(!second.generated, "valid dev certificates are reused");
        assert_eq!(load_pair(&second.cert, &second.key).unwrap().serial, pair.serial);
    }

    #[test]
    fn expiring_pair_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = generate(OffsetDateTime::now_utc() - Duration::days(88)).unwrap();
        std::fs::write(dir.path().join(CA_FILE), ca).unwrap();
        std::fs::write(dir.path().join(CERT_FILE), cert).unwrap();
        std::fs::write(dir.path().join(KEY_FILE), key).unwrap();
        assert!(ensure(dir.path()).unwrap().generated, "a pair with 2 days left is renewed");
    }
}
