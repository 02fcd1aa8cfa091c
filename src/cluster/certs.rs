//! Self-managed certificates, for clusters without cert-manager: dx-admission keeps its own CA
//! and serving certificate in a Secret shared by every replica, writes the pair where the
//! server's hot reload reads it, and keeps the caBundle of its webhook configurations current.
//!
//! Each cycle (every quarter of `renew_before`, at most hourly), any replica may act; the Secret's
//! resourceVersion makes each write a compare-and-swap, so concurrent replicas never diverge.
//! - The serving certificate is re-issued when less than `renew_before` of it is left.
//! - The CA is replaced when it could no longer outlive a fresh serving certificate. The new CA
//!   joins the bundle first; the serving certificate moves to it one cycle later, once the API
//!   server trusts it; the old CA leaves the bundle two cycles after that, once every replica
//!   serves the new certificate.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How self-managed certificates are kept.
#[derive(Clone, Debug)]
pub struct SelfManagedConfig {
    pub kubeconfig: Option<PathBuf>,
    /// Namespace and name of the Secret holding CA and serving pair.
    pub namespace: String,
    pub secret: String,
    /// The Validating- and MutatingWebhookConfigurations (same name) whose caBundle is kept current.
    pub webhook_configurations: String,
    pub dns_names: Vec<String>,
    pub ca_validity: Duration,
    pub cert_validity: Duration,
    pub renew_before: Duration,
    /// Where the serving pair is written for the server to load.
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl SelfManagedConfig {
    pub fn interval(&self) -> Duration {
        (self.renew_before / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] crate::client::ConnectError),
}

const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
/// Unix time the current CA was created (it joined the bundle).
const CA_CREATED: &str = "dx.hcl.com/ca-created-at";
/// Unix time the serving certificate was issued.
const CERT_ISSUED: &str = "dx.hcl.com/cert-issued-at";

/// The Secret's contents, parsed.
#[derive(Clone, Debug, PartialEq)]
struct Material {
    /// PEM certificates, current CA first.
    bundle: Vec<String>,
    ca_key: String,
    cert: String,
    key: String,
    ca_created: i64,
    cert_issued: i64,
}

struct Facts {
    ca_not_after: i64,
    cert_not_after: i64,
    cert_issuer_is_current_ca: bool,
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

fn parse_der(pem: &str) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| CertError::Invalid(format!("a certificate does not parse: {e}")))
}

fn not_after(pem: &str) -> Result<i64, CertError> {
    let der = parse_der(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| CertError::Invalid(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp())
}

fn issued_by(cert_pem: &str, ca_pem: &str) -> Result<bool, CertError> {
    let (cert_der, ca_der) = (parse_der(cert_pem)?, parse_der(ca_pem)?);
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).map_err(|e| CertError::Invalid(e.to_string()))?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).map_err(|e| CertError::Invalid(e.to_string()))?;
    Ok(cert.verify_signature(Some(ca.public_key())).is_ok())
}

impl Material {
    fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let text = |key: &str| data.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok());
        let annotation = |key: &str| secret.metadata.annotations.as_ref()?.get(key)?.parse().ok();
        let bundle_text = text(CA_CRT)?;
        let bundle: Vec<String> = bundle_text
            .split_inclusive("-----END CERTIFICATE-----")
            .map(|pem| pem.trim_start().to_owned())
            .filter(|pem| pem.contains("BEGIN CERTIFICATE"))
            .map(|pem| format!("{pem}\n"))
            .collect();
        Some(Self {
            bundle,
            ca_key: text(CA_KEY)?,
            cert: text(TLS_CRT)?,
            key: text(TLS_KEY)?,
            ca_created: annotation(CA_CREATED).unwrap_or(0),
            cert_issued: annotation(CERT_ISSUED).unwrap_or(0),
        })
    }

    fn facts(&self) -> Result<Facts, CertError> {
        let current = self.bundle.first().ok_or_else(|| CertError::Invalid("the CA bundle is empty".into()))?;
        Ok(Facts {
            ca_not_after: not_after(current)?,
            cert_not_after: not_after(&self.cert)?,
            cert_issuer_is_current_ca: issued_by(&self.cert, current)?,
        })
    }

    fn bundle_pem(&self) -> String {
        self.bundle.concat()
    }

    fn apply_to(&self, secret: &mut Secret) {
        let data = [
            (CA_CRT, self.bundle_pem()),
            (CA_KEY, self.ca_key.clone()),
            (TLS_CRT, self.cert.clone()),
            (TLS_KEY, self.key.clone()),
        ];
        secret.data = Some(data.into_iter().map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes()))).collect());
        let annotations = secret.metadata.annotations.get_or_insert_with(Default::default);
        annotations.insert(CA_CREATED.into(), self.ca_created.to_string());
        annotations.insert(CERT_ISSUED.into(), self.cert_issued.to_string());
        secret.type_ = Some("Opaque".into());
    }
}

fn new_ca(validity: Duration) -> Result<(String, String), CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, format!("dx-admission CA {}", now()));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let start = OffsetDateTime::now_utc();
    params.not_before = start - time::Duration::minutes(5);
    params.not_after = start + time::Duration::seconds(secs(validity));
    Ok((params.self_signed(&key)?.pem(), key.serialize_pem()))
}

fn new_cert(config: &SelfManagedConfig, ca_pem: &str, ca_key: &str) -> Result<(String, String), CertError> {
    let issuer = Issuer::from_ca_cert_pem(ca_pem, KeyPair::from_pem(ca_key)?)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(config.dns_names.clone())?;
    params.distinguished_name.push(DnType::CommonName, config.dns_names.first().cloned().unwrap_or_default());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let start = OffsetDateTime::now_utc();
    params.not_before = start - time::Duration::minutes(5);
    params.not_after = start + time::Duration::seconds(secs(config.cert_validity));
    Ok((params.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
}

/// What the next state of the Secret should be, or `None` when nothing is due.
fn next(config: &SelfManagedConfig, current: Option<&Material>) -> Result<Option<Material>, CertError> {
    let now = now();
    let interval = secs(config.interval());
    let Some(material) = current.filter(|m| m.facts().is_ok()) else {
        let (ca, ca_key) = new_ca(config.ca_validity)?;
        let (cert, key) = new_cert(config, &ca, &ca_key)?;
        return Ok(Some(Material { bundle: vec![ca], ca_key, cert, key, ca_created: now, cert_issued: now }));
    };
    let facts = material.facts()?;
    let mut next = material.clone();
    // A CA that could not outlive a fresh certificate is replaced; the new one joins the bundle.
    if facts.ca_not_after - now < secs(config.renew_before) + secs(config.cert_validity)
        && facts.cert_issuer_is_current_ca
    {
        let (ca, ca_key) = new_ca(config.ca_validity)?;
        next.bundle.insert(0, ca);
        next.bundle.truncate(2);
        next.ca_key = ca_key;
        next.ca_created = now;
        return Ok(Some(next));
    }
    let trusted_for_a_cycle = now - material.ca_created >= interval;
    let expiring = facts.cert_not_after - now < secs(config.renew_before);
    if (expiring || !facts.cert_issuer_is_current_ca) && trusted_for_a_cycle {
        let (cert, key) = new_cert(config, &material.bundle[0], &material.ca_key)?;
        next.cert = cert;
        next.key = key;
        next.cert_issued = now;
        return Ok(Some(next));
    }
    // The old CA leaves once every replica has had two cycles to load the new certificate.
    if next.bundle.len() > 1 && facts.cert_issuer_is_current_ca && now - material.cert_issued >= 2 * interval {
        next.bundle.truncate(1);
        return Ok(Some(next));
    }
    Ok(None)
}

/// Keeps the self-managed certificates.
/// How often the caBundle of the webhook configurations is checked between cycles.
const PUBLISH_EVERY: Duration = Duration::from_secs(10);

pub struct SelfManaged {
    api: Api<Secret>,
    client: Client,
    config: SelfManagedConfig,
}

impl SelfManaged {
    pub async fn new(config: SelfManagedConfig) -> Result<Self, CertError> {
        let client = crate::client::connect(config.kubeconfig.as_deref()).await?;
        Ok(Self { api: Api::namespaced(client.clone(), &config.namespace), client, config })
    }

    /// One cycle: renew what is due, write the pair, publish the bundle; returns the bundle.
    pub async fn cycle(&self) -> Result<String, CertError> {
        let stored = self.api.get_opt(&self.config.secret).await?;
        let current = stored.as_ref().and_then(Material::from_secret);
        let material = match next(&self.config, current.as_ref())? {
            None => current.ok_or_else(|| CertError::Invalid("no certificate material".into()))?,
            Some(material) => match self.store(stored, &material).await? {
                true => {
                    info!(secret = %self.config.secret, bundle = material.bundle.len(), "self-managed certificates updated");
                    material
                }
                // Another replica wrote first: use what it stored.
                false => self
                    .api
                    .get_opt(&self.config.secret)
                    .await?
                    .as_ref()
                    .and_then(Material::from_secret)
                    .ok_or_else(|| CertError::Invalid("the certificate Secret vanished".into()))?,
            },
        };
        self.write_files(&material)?;
        let bundle = material.bundle_pem();
        self.publish(&bundle).await?;
        Ok(bundle)
    }

    /// Creates or replaces the Secret; `false` when another replica changed it first.
    async fn store(&self, stored: Option<Secret>, material: &Material) -> Result<bool, CertError> {
        let conflict = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409);
        let result = match stored {
            Some(mut secret) => {
                material.apply_to(&mut secret);
                self.api.replace(&self.config.secret, &PostParams::default(), &secret).await
            }
            None => {
                let mut secret = Secret {
                    metadata: ObjectMeta { name: Some(self.config.secret.clone()), ..ObjectMeta::default() },
                    ..Secret::default()
                };
                material.apply_to(&mut secret);
                self.api.create(&PostParams::default(), &secret).await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn write_files(&self, material: &Material) -> Result<(), CertError> {
        for (path, text) in [(&self.config.key_path, &material.key), (&self.config.cert_path, &material.cert)] {
            if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
                continue;
            }
            // Write then rename, so the hot reload never reads half a file.
            let partial = path.with_extension("partial");
            std::fs::write(&partial, text)
                .and_then(|()| std::fs::rename(&partial, path))
                .map_err(|source| CertError::Write { path: path.clone(), source })?;
        }
        Ok(())
    }

    /// Sets the caBundle of every webhook of the two configurations, where it differs.
    async fn publish(&self, bundle: &str) -> Result<(), CertError> {
        let encoded = ByteString(bundle.as_bytes().to_vec());
        let name = &self.config.webhook_configurations;
        let validating = Api::<ValidatingWebhookConfiguration>::all(self.client.clone());
        if let Some(mut config) = validating.get_opt(name).await? {
            let slots = config.webhooks.iter_mut().flatten().map(|hook| &mut hook.client_config.ca_bundle);
            if set_all(slots, &encoded) {
                validating.replace(name, &PostParams::default(), &config).await?;
                info!(configuration = %name, "caBundle of the ValidatingWebhookConfiguration updated");
            }
        } else {
            warn!(configuration = %name, "no ValidatingWebhookConfiguration to keep current");
        }
        let mutating = Api::<MutatingWebhookConfiguration>::all(self.client.clone());
        if let Some(mut config) = mutating.get_opt(name).await? {
            let slots = config.webhooks.iter_mut().flatten().map(|hook| &mut hook.client_config.ca_bundle);
            if set_all(slots, &encoded) {
                mutating.replace(name, &PostParams::default(), &config).await?;
                info!(configuration = %name, "caBundle of the MutatingWebhookConfiguration updated");
            }
        }
        Ok(())
    }

    /// Runs a cycle every interval until stopped, and between cycles re-publishes the bundle
    /// every [`PUBLISH_EVERY`]: a webhook configuration created after the replica started (Helm
    /// applies them after the Deployment) or re-applied without its caBundle is trusted within
    /// seconds, not at the next cycle, hours later.
    pub fn spawn(self, stop: CancellationToken, bundle: String) {
        tokio::spawn(async move {
            let mut bundle = bundle;
            let mut next_cycle = tokio::time::Instant::now() + self.config.interval();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(PUBLISH_EVERY.min(self.config.interval())) => {}
                }
                if tokio::time::Instant::now() < next_cycle {
                    if let Err(error) = self.publish(&bundle).await {
                        warn!(%error, "could not publish the caBundle; retrying");
                    }
                    continue;
                }
                next_cycle = tokio::time::Instant::now() + self.config.interval();
                match self.cycle().await {
                    Ok(published) => bundle = published,
                    Err(error) => warn!(%error, "self-managed certificate cycle failed; retrying next interval"),
                }
            }
        });
    }
}

/// Sets every webhook's caBundle (all of them, not just the first that differs); whether any changed.
fn set_all<'a>(slots: impl Iterator<Item = &'a mut Option<ByteString>>, bundle: &ByteString) -> bool {
    let mut changed = false;
    for slot in slots {
        if slot.as_ref() != Some(bundle) {
            *slot = Some(bundle.clone());
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ca: u64, cert: u64, renew: u64) -> SelfManagedConfig {
        SelfManagedConfig {
            kubeconfig: None,
            namespace: "dx-system".into(),
            secret: "dx-admission-tls".into(),
            webhook_configurations: "dx-admission".into(),
            dns_names: vec!["dx-admission.dx-system.svc".into()],
            ca_validity: Duration::from_secs(ca),
            cert_validity: Duration::from_secs(cert),
            renew_before: Duration::from_secs(renew),
            cert_path: "tls.crt".into(),
            key_path: "tls.key".into(),
        }
    }

    #[test]
    fn first_cycle_creates_a_ca_and_a_certificate_it_signs() {
        let material = next(&config(86400, 3600, 600), None).unwrap().unwrap();
        assert_eq!(material.bundle.len(), 1);
        assert!(issued_by(&material.cert, &material.bundle[0]).unwrap());
        assert!(next(&config(86400, 3600, 600), Some(&material)).unwrap().is_none(), "nothing is due");
    }

    #[test]
    fn an_expiring_certificate_is_reissued_by_the_same_ca() {
        let long = config(86400, 3600, 600);
        let mut material = next(&long, None).unwrap().unwrap();
        material.ca_created -= 3600;
        // A policy that wants more than the certificate's whole life left: it is due now.
        let renewed = next(&config(86400, 3600, 7200), Some(&material)).unwrap().unwrap();
        assert_ne!(renewed.cert, material.cert);
        assert_eq!(renewed.bundle, material.bundle);
    }

    #[test]
    fn a_ca_roll_keeps_both_cas_until_the_certificate_moved() {
        // A CA of 600 s cannot outlive a new certificate of 3600 s: a new CA joins the bundle.
        let mut material = next(&config(600, 3600, 60), None).unwrap().unwrap();
        let long = config(86400, 3600, 60);
        let rolled = next(&long, Some(&material)).unwrap().unwrap();
        assert_eq!(rolled.bundle.len(), 2);
        assert_eq!(rolled.bundle[1], material.bundle[0]);
        assert_eq!(rolled.cert, material.cert, "the certificate stays until the bundle is trusted");
        assert!(next(&long, Some(&rolled)).unwrap().is_none(), "nothing moves within the first cycle");
        // A cycle later the certificate moves to the new CA.
        material = rolled;
        material.ca_created -= 60;
        let moved = next(&long, Some(&material)).unwrap().unwrap();
        assert!(issued_by(&moved.cert, &moved.bundle[0]).unwrap());
        assert_eq!(moved.bundle.len(), 2, "the old CA stays while replicas switch");
        // Two cycles after that the old CA leaves.
        let mut settled = moved;
        settled.cert_issued -= 120;
        let trimmed = next(&long, Some(&settled)).unwrap().unwrap();
        assert_eq!(trimmed.bundle.len(), 1);
    }
}
