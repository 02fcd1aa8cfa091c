//! TLS: the serving certificate, loaded before the socket binds and reloaded when the files
//! change. New handshakes use the newest good pair; open connections keep theirs. A pair that
//! does not parse, does not match, or has expired is refused and the last good one keeps serving.

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{error, info};

use crate::metrics::Metrics;

/// Why a certificate pair was refused. Each message names the file to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no usable PEM private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{cert} and {key} do not belong together: {reason}")]
    Mismatch { cert: PathBuf, key: PathBuf, reason: String },
    #[error("{path}: the certificate does not parse: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: the certificate expired at {not_after}")]
    Expired { path: PathBuf, not_after: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A loaded pair and what is known about it.
pub struct LoadedPair {
    pub certified: Arc<CertifiedKey>,
    /// Unix time the leaf certificate expires.
    pub not_after: i64,
    /// The leaf's serial number, hex: logged on every change so rotations can be traced.
    pub serial: String,
    fingerprint: u64,
}

/// Reads and checks a certificate chain and key.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<LoadedPair, TlsError> {
    let read = |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source });
    let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
    let mut hasher = DefaultHasher::new();
    (&cert_pem, &key_pem).hash(&mut hasher);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Parse { path: cert_path.to_owned(), reason: e.to_string() })?;
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate { path: cert_path.to_owned() })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| TlsError::Parse { path: cert_path.to_owned(), reason: e.to_string() })?;
    let not_after = parsed.validity().not_after;
    if !parsed.validity().is_valid() && not_after.timestamp() < now() {
        return Err(TlsError::Expired { path: cert_path.to_owned(), not_after: not_after.to_string() });
    }
    let serial = parsed.raw_serial_as_string().replace(':', "");
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::Key { path: key_path.to_owned(), reason: e.to_string() })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Key { path: key_path.to_owned(), reason: e.to_string() })?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| TlsError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(LoadedPair {
        certified: Arc::new(certified),
        not_after: not_after.timestamp(),
        serial,
        fingerprint: hasher.finish(),
    })
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The serving pair, swappable while handshakes read it.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<LoadedPair>,
    pub(crate) metrics: Arc<Metrics>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").field("cert_path", &self.cert_path).field("key_path", &self.key_path).finish()
    }
}

impl CertStore {
    /// Loads the pair; fails at once so a bad start-up configuration never binds.
    pub fn load(cert_path: PathBuf, key_path: PathBuf, metrics: Arc<Metrics>) -> Result<Self, TlsError> {
        let pair = load_pair(&cert_path, &key_path)?;
        metrics.certificate_expiry.set(pair.not_after);
        info!(serial = %pair.serial, not_after = pair.not_after, cert = %cert_path.display(), "serving certificate loaded");
        Ok(Self { cert_path, key_path, current: ArcSwap::from_pointee(pair), metrics })
    }

    /// Re-reads the files; swaps in a changed, valid pair. Returns whether the pair changed.
    pub fn reload(&self) -> bool {
        match load_pair(&self.cert_path, &self.key_path) {
            Ok(pair) if pair.fingerprint == self.current.load().fingerprint => false,
            Ok(pair) => {
                info!(serial = %pair.serial, not_after = pair.not_after, "serving certificate reloaded");
                self.metrics.certificate_expiry.set(pair.not_after);
                self.current.store(Arc::new(pair));
                Metrics::count_result(&self.metrics.tls_reloads, true);
                true
            }
            Err(error) => {
                let serial = self.current.load().serial.clone();
                error!(%error, serving_serial = %serial, "refused new serving certificate; the last good one keeps serving");
                Metrics::count_result(&self.metrics.tls_reloads, false);
                false
            }
        }
    }

    /// The serial of the pair serving new handshakes.
    pub fn serial(&self) -> String {
        self.current.load().serial.clone()
    }

    /// The directories to watch for rotation (a mounted Secret swaps a symlink in them).
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [&self.cert_path, &self.key_path].iter().map(|p| parent_dir(p)).collect();
        dirs.dedup();
        dirs
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.load().certified))
    }
}

/// The TLS configuration handshakes use: the serving pair (asked of the [`CertStore`] on every
/// handshake) and, with `--client-ca`, the CA bundle clients must present a certificate from. The
/// bundle is re-read with the pair; a changed, valid bundle builds a new configuration for new
/// handshakes, a bad one is refused and the last good one keeps serving.
pub struct Tls {
    pub certs: Arc<CertStore>,
    client_ca: Option<PathBuf>,
    ca_fingerprint: std::sync::atomic::AtomicU64,
    current: ArcSwap<ServerConfig>,
}

impl Tls {
    /// Builds the first configuration; a bad bundle fails at once, before anything binds.
    pub fn new(certs: Arc<CertStore>, client_ca: Option<PathBuf>) -> Result<Self, TlsError> {
        let (config, fingerprint) = server_config(Arc::clone(&certs), client_ca.as_deref())?;
        if let Some(path) = &client_ca {
            info!(client_ca = %path.display(), "client CA bundle loaded");
        }
        Ok(Self { certs, client_ca, ca_fingerprint: fingerprint.into(), current: ArcSwap::new(config) })
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Re-reads the pair and the bundle. Returns whether anything changed.
    pub fn reload(&self) -> bool {
        let pair = self.certs.reload();
        let Some(path) = &self.client_ca else { return pair };
        let fingerprint = std::fs::read(path).map(|pem| fingerprint(&pem)).unwrap_or(0);
        if fingerprint == self.ca_fingerprint.load(std::sync::atomic::Ordering::SeqCst) {
            return pair;
        }
        match server_config(Arc::clone(&self.certs), Some(path)) {
            Ok((config, fingerprint)) => {
                info!(client_ca = %path.display(), "client CA bundle reloaded");
                self.current.store(config);
                self.ca_fingerprint.store(fingerprint, std::sync::atomic::Ordering::SeqCst);
                Metrics::count_result(&self.certs.metrics.tls_reloads, true);
                true
            }
            Err(error) => {
                error!(%error, "refused new client CA bundle; the last good one keeps serving");
                Metrics::count_result(&self.certs.metrics.tls_reloads, false);
                pair
            }
        }
    }

    /// The directories to watch: the pair's and the bundle's.
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = self.certs.watched_dirs();
        dirs.extend(self.client_ca.as_deref().map(parent_dir));
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

fn parent_dir(path: &Path) -> PathBuf {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned()
}

/// A rustls server configuration that asks `store` for the pair on every handshake, and the
/// fingerprint of the client CA bundle it was built from (0 without one).
/// TLS 1.2 and 1.3 only, rustls' safe defaults; HTTP/2 and HTTP/1.1 by ALPN. With `client_ca`,
/// only clients presenting a certificate from that CA (the API server) complete a handshake.
fn server_config(store: Arc<CertStore>, client_ca: Option<&Path>) -> Result<(Arc<ServerConfig>, u64), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
    let (builder, ca_fingerprint) = match client_ca {
        None => (builder.with_no_client_auth(), 0),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| TlsError::Parse { path: path.to_owned(), reason: e.to_string() })?;
                roots.add(cert).map_err(|e| TlsError::Parse { path: path.to_owned(), reason: e.to_string() })?;
            }
            if roots.is_empty() {
                return Err(TlsError::NoCertificate { path: path.to_owned() });
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Parse { path: path.to_owned(), reason: e.to_string() })?;
            (builder.with_client_cert_verifier(verifier), fingerprint(&pem))
        }
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), ca_fingerprint))
}
