//! Shared test helpers: a test PKI, the real server on loopback, an HTTPS client, and
//! AdmissionReviews built from envelopes a real kube-apiserver sent.
#![allow(dead_code)]

pub mod binary;
pub mod docker;
pub mod load;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dx_admission::policy::Settings;
use dx_admission::server::{Limits, Server, ServerConfig};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A CA that issues serving certificates for 127.0.0.1.
pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Self { ca_pem, issuer: Issuer::new(params, key) }
    }

    /// Signs `params` for `key` (PEM certificate).
    pub fn sign(&self, params: &CertificateParams, key: &KeyPair) -> String {
        params.signed_by(key, &self.issuer).unwrap().pem()
    }

    /// A serving certificate and key (PEM) for 127.0.0.1 and localhost.
    pub fn issue(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A caught panic as a libtest failure of the harnesses of our own (e2e, image), with its message.
pub fn failed(panic: Box<dyn std::any::Any + Send>) -> libtest_mimic::Failed {
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "the test panicked".into());
    libtest_mimic::Failed::from(message)
}

/// A copy of the repository's schema directory at `to`, for tests that change it.
pub fn copy_schemas(to: &Path) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    copy(&repo().join("schemas"), to);
}

/// The repository's schemas at `to` plus a candidate `v3` (not the default): v2 with the global
/// ConfigMap also requiring `dx.region`, which no example sets.
pub fn candidate_schemas(to: &Path) {
    copy_schemas(to);
    let v3 = to.join("v3");
    for dir in ["configmap", "deployment", "statefulset"] {
        std::fs::create_dir_all(v3.join(dir)).unwrap();
        for entry in std::fs::read_dir(to.join("v2").join(dir)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, v3.join(dir).join(path.file_name().unwrap())).unwrap();
        }
    }
    let global = v3.join("configmap/global.json");
    let mut schema: Value = serde_json::from_str(&std::fs::read_to_string(&global).unwrap()).unwrap();
    schema["title"] = "Global DX ConfigMap (v3)".into();
    schema["properties"]["dx.region"] =
        serde_json::json!({"type": "string", "minLength": 1, "description": "Region the deployment runs in."});
    schema["required"].as_array_mut().unwrap().push("dx.region".into());
    std::fs::write(&global, serde_json::to_string_pretty(&schema).unwrap()).unwrap();
    let index = to.join("index.yaml");
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(index, format!("{text}  - name: v3\n    notes: Requires dx.region in the global ConfigMap.\n"))
        .unwrap();
}

/// The files of a schema directory as a ConfigMap holds them (the chart's `schemas.configMap`):
/// flat names, `/` written as `__` (`v2__configmap__core.json`).
pub fn flat_schemas(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, prefix: &str, into: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &format!("{name}__"), into);
            } else {
                into.push((name, std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, "", &mut files);
    files
}

/// `files` as [`SecretMount::of_files`] takes them.
pub fn borrowed(files: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    files.iter().map(|(name, content)| (name.as_str(), content.as_slice())).collect()
}

/// A directory laid out the way Kubernetes mounts a Secret or ConfigMap: the files are symlinks
/// into `..data`, itself a symlink to a timestamped directory that is swapped atomically.
pub struct SecretMount {
    pub dir: PathBuf,
    generation: u32,
}

impl SecretMount {
    /// A mounted serving pair, `tls.crt` and `tls.key`.
    pub fn new(dir: &Path, cert: &str, key: &str) -> Self {
        Self::of_files(dir, &[("tls.crt", cert.as_bytes()), ("tls.key", key.as_bytes())])
    }

    /// A mount of `files` (name, content), as a ConfigMap's keys are mounted.
    pub fn of_files(dir: &Path, files: &[(&str, &[u8])]) -> Self {
        let mut mount = Self { dir: dir.to_owned(), generation: 0 };
        mount.swap_files(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        mount
    }

    /// Writes a new pair and swaps `..data` to it in one rename, as the kubelet does.
    pub fn swap(&mut self, cert: &str, key: &str) {
        self.swap_files(&[("tls.crt", cert.as_bytes()), ("tls.key", key.as_bytes())]);
    }

    /// Writes a new generation of the same file names and swaps `..data` to it in one rename.
    pub fn swap_files(&mut self, files: &[(&str, &[u8])]) {
        self.generation += 1;
        let name = format!("..2026_11_20_{:04}", self.generation);
        let generation = self.dir.join(&name);
        std::fs::create_dir(&generation).unwrap();
        for (file, content) in files {
            std::fs::write(generation.join(file), content).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
}

/// The real server, started in-process on loopback ports chosen by the OS.
pub struct TestServer {
    pub server: Option<Server>,
    pub tls_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub pki: Pki,
    pub mount: SecretMount,
    pub temp: tempfile::TempDir,
}

pub fn test_limits() -> Limits {
    Limits {
        drain_delay: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(2),
        reload_interval: Duration::from_secs(60),
        ..Limits::default()
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the bundled schemas; `adjust` may change the configuration first.
    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let pki = Pki::new("dx-admission test CA");
        let (cert, key) = pki.issue();
        let certs = temp.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        let mount = SecretMount::new(&certs, &cert, &key);
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            tls_cert: mount.cert(),
            tls_key: mount.key(),
            client_ca: None,
            schemas: repo().join("schemas"),
            settings: Settings::default(),
            limits: test_limits(),
            cluster: None,
            self_managed: None,
        };
        adjust(&mut config);
        let server = Server::start(config).await.expect("server starts");
        Self { tls_addr: server.tls_addr, ops_addr: server.ops_addr, server: Some(server), pki, mount, temp }
    }

    pub fn client(&self) -> Client {
        Client { addr: self.tls_addr, ca_pem: self.pki.ca_pem.clone() }
    }

    /// POSTs JSON to the TLS port over a new connection.
    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> (u16, Value) {
        self.client().post(path, "application/json", body.into()).await
    }

    /// POSTs a review to /validate and returns the AdmissionReview response object.
    pub async fn validate(&self, review: &Value) -> Value {
        let (status, body) = self.post("/validate", review.to_string()).await;
        assert_eq!(status, 200, "validate answered {status}: {body}");
        body["response"].clone()
    }

    /// GETs a path on the plain-HTTP ops port.
    pub async fn ops(&self, path: &str) -> (u16, String) {
        http_get(self.ops_addr, path).await
    }

    pub async fn metric(&self, line_prefix: &str) -> f64 {
        metric(self.ops_addr, line_prefix).await
    }
}

/// The value of the first metric line starting with `line_prefix`. A counter series not yet
/// created reads 0 — only if the README's metrics table documents it as a counter: a misspelt
/// or removed metric fails the test instead of reading 0.
pub async fn metric(ops: SocketAddr, line_prefix: &str) -> f64 {
    let (_, text) = http_get(ops, "/metrics").await;
    let values = series(&text, line_prefix);
    values.first().copied().unwrap_or_else(|| unstarted_counter(line_prefix))
}

/// The sum of every metric line starting with `line_prefix` (a family, or a partial label set),
/// read as [`metric`] reads one.
pub async fn metric_sum(ops: SocketAddr, line_prefix: &str) -> f64 {
    let (_, text) = http_get(ops, "/metrics").await;
    let values = series(&text, line_prefix);
    if values.is_empty() { unstarted_counter(line_prefix) } else { values.iter().sum() }
}

/// The values of the series starting with `line_prefix` (none when it is not exported).
pub async fn metric_values(ops: SocketAddr, line_prefix: &str) -> Vec<f64> {
    let (_, text) = http_get(ops, "/metrics").await;
    series(&text, line_prefix)
}

fn series(text: &str, line_prefix: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| l.starts_with(line_prefix))
        .map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("metric line {l:?}")))
        .collect()
}

fn unstarted_counter(line_prefix: &str) -> f64 {
    let name = line_prefix.split('{').next().unwrap_or(line_prefix);
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.lines().any(|l| l.starts_with(&format!("| `{name}` | counter |"))),
        "no metric {line_prefix:?} is exported, and the README documents no counter {name}"
    );
    0.0
}

/// Starts HTTP/1.1 on an open stream, driving the connection in the background.
pub async fn http1<S, B>(stream: S) -> hyper::client::conn::http1::SendRequest<B>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// A plain HTTP/1.1 GET.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).await.unwrap_or_else(|| panic!("nothing listens on {addr}"))
}

/// [`http_get`], or `None` while nothing listens on `addr`.
pub async fn try_http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let mut sender = http1(stream).await;
    let request = Request::get(path).header("host", addr.to_string()).body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// An HTTPS client that trusts one CA.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub ca_pem: String,
}

impl Client {
    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }

    /// Opens a TLS connection (HTTP/1.1 by ALPN).
    pub async fn connect(&self) -> Result<TlsStream<TcpStream>, std::io::Error> {
        self.connect_alpn(&[b"http/1.1"]).await
    }

    pub async fn connect_alpn(&self, alpn: &[&[u8]]) -> Result<TlsStream<TcpStream>, std::io::Error> {
        self.connect_to(ServerName::IpAddress(self.addr.ip().into()), alpn).await
    }

    async fn connect_to(
        &self,
        name: ServerName<'static>,
        alpn: &[&[u8]],
    ) -> Result<TlsStream<TcpStream>, std::io::Error> {
        let tcp = TcpStream::connect(self.addr).await?;
        // As the API server's client: HTTP/2 writes a request's frames apart, and Nagle's timer
        // would hold the second until the first is acknowledged.
        tcp.set_nodelay(true)?;
        self.connector(alpn).connect(name, tcp).await
    }

    /// The serial (hex) of the certificate a new handshake for host `name` is served, verified
    /// as the API server verifies it (a Service's DNS name, not the address dialled).
    pub async fn serial_as(&self, name: &str) -> Result<String, std::io::Error> {
        let name = ServerName::try_from(name.to_owned()).expect("a DNS name");
        let stream = self.connect_to(name, &[b"http/1.1"]).await?;
        Ok(serial_of(&stream))
    }

    /// The serial (hex) of the certificate a new handshake is served.
    pub async fn serial(&self) -> String {
        let stream = self.connect().await.expect("handshake");
        serial_of(&stream)
    }

    pub async fn post(&self, path: &str, content_type: &str, body: Bytes) -> (u16, Value) {
        let mut sender = http1(self.connect().await.expect("handshake")).await;
        send(&mut sender, path, content_type, body).await
    }
}

/// Sends one POST on an open HTTP/1.1 connection.
pub async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    content_type: &str,
    body: Bytes,
) -> (u16, Value) {
    let mut request = Request::post(path).header("host", "127.0.0.1");
    if !content_type.is_empty() {
        request = request.header("content-type", content_type);
    }
    let request = request.body(Full::new(body)).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

pub fn serial_of(stream: &TlsStream<TcpStream>) -> String {
    let certs = stream.get_ref().1.peer_certificates().expect("peer certificate");
    let (_, parsed) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    parsed.raw_serial_as_string().replace(':', "")
}

pub fn serial_of_pem(pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    parsed.raw_serial_as_string().replace(':', "")
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

/// The negative counterpart of [`eventually`]: polls `check` every 50 ms for the whole `window`
/// and is false as soon as it fails once. The window is what a "nothing happened" claim rests on,
/// so callers name it in their assertion.
pub async fn holds_for<F, Fut>(window: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < deadline {
        if !check().await {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

/// A real AdmissionReview body captured from a kube-apiserver.
pub fn fixture(name: &str) -> Value {
    let path = repo().join("tests/fixtures/admission-reviews").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A review of `object` in the envelope the API server sends (`oldObject: null` on CREATE).
pub fn review(operation: &str, object: Option<&Value>, old: Option<&Value>) -> Value {
    let mut review = fixture("configmap-create-allowed.json");
    let subject = object.or(old).expect("an object");
    let kind = subject["kind"].as_str().unwrap();
    let (group, resource) = match kind {
        "ConfigMap" => ("", "configmaps"),
        "StatefulSet" => ("apps", "statefulsets"),
        "Deployment" => ("apps", "deployments"),
        other => ("example.com", other),
    };
    let gvk = json!({"group": group, "version": "v1", "kind": kind});
    let gvr = json!({"group": group, "version": "v1", "resource": resource});
    let request = &mut review["request"];
    request["uid"] = json!(format!("test-{}", rand_suffix()));
    request["kind"] = gvk.clone();
    request["requestKind"] = gvk;
    request["resource"] = gvr.clone();
    request["requestResource"] = gvr;
    request["name"] = subject["metadata"]["name"].clone();
    request["namespace"] = subject["metadata"]["namespace"].clone();
    request["operation"] = json!(operation);
    request["object"] = object.cloned().unwrap_or(Value::Null);
    request["oldObject"] = old.cloned().unwrap_or(Value::Null);
    review
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Every document of a YAML file as JSON.
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    yaml_from_str(&std::fs::read_to_string(path).unwrap())
}

/// The example manifests of the kinds the webhooks are registered for (not the claims), as
/// (file, object) pairs, in a stable order.
pub fn examples(set: &str) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(repo().join("examples").join(set)).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .flat_map(|file| {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            yaml_documents(&file).into_iter().map(move |doc| (name.clone(), doc))
        })
        .filter(|(_, doc)| {
            ["ConfigMap", "Secret", "StatefulSet", "Deployment"].contains(&doc["kind"].as_str().unwrap_or(""))
        })
        .collect()
}

/// Every document of a YAML text as JSON.
pub fn yaml_from_str(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}
