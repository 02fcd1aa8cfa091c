//! A load generator for an admission webhook (or, with a client identity, for the API server in
//! front of one): keep-alive HTTPS/1.1 connections on loopback,
//! either closed loop (each connection sends as soon as its answer arrives: saturation) or open
//! loop (a fixed rate, each request's latency counted from when it was due, so a server that
//! falls behind is charged for the queue it causes).
//!
//! Shared by the fault tests and the load benchmark (`benches/load.rs` includes this file).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where the load goes: an address and a TLS client trusting its CA.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    connector: TlsConnector,
}

impl Target {
    pub fn new(addr: SocketAddr, ca_pem: &str) -> Self {
        Self::with_identity(addr, ca_pem, None)
    }

    /// A target that asks for a client certificate: `identity` is (certificate PEM, key PEM).
    pub fn with_identity(addr: SocketAddr, ca_pem: &str, identity: Option<(&str, &str)>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain =
                    CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>().expect("cert PEM");
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM");
                builder.with_client_auth_cert(chain, key).expect("client identity")
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self { addr, connector: TlsConnector::from(Arc::new(config)) }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect(self.addr).await.map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = self.connector.connect(name, tcp).await.map_err(|e| format!("TLS handshake: {e}"))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("HTTP: {e}"))?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

/// One request of the mix, and what a correct answer to it says.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: hyper::Method,
    pub path: String,
    pub body: Bytes,
    /// The HTTP status of a correct answer.
    pub status: u16,
    /// `response.uid` must echo this (unset for a server that answers a fixed body).
    pub uid: Option<String>,
    /// `response.allowed` must be this.
    pub allowed: Option<bool>,
}

impl Request {
    /// A review whose answer must echo its uid and give `allowed`.
    pub fn review(path: &str, review: &serde_json::Value, allowed: bool) -> Self {
        Self {
            method: hyper::Method::POST,
            path: path.to_owned(),
            status: 200,
            body: Bytes::from(serde_json::to_vec(review).expect("JSON")),
            uid: review["request"]["uid"].as_str().map(str::to_owned),
            allowed: Some(allowed),
        }
    }

    /// A request whose correct answer is HTTP `status`, whatever its body.
    pub fn call(method: hyper::Method, path: &str, body: impl Into<Bytes>, status: u16) -> Self {
        Self { method, path: path.to_owned(), body: body.into(), status, uid: None, allowed: None }
    }

    fn http(&self) -> hyper::Request<Full<Bytes>> {
        hyper::Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(self.body.clone()))
            .expect("request")
    }

    /// Why `body` (with HTTP `status`) is not a correct answer, if it is not.
    fn wrong_answer(&self, status: u16, body: &[u8]) -> Option<String> {
        if status != self.status {
            return Some(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
        }
        if self.uid.is_none() && self.allowed.is_none() {
            return None;
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Some("answer is not JSON".into());
        };
        let response = &value["response"];
        if let Some(uid) = &self.uid
            && response["uid"].as_str() != Some(uid)
        {
            return Some(format!("answer's uid {} is not {uid}", response["uid"]));
        }
        if let Some(allowed) = self.allowed
            && response["allowed"].as_bool() != Some(allowed)
        {
            return Some(format!("answer's allowed is {}, expected {allowed}", response["allowed"]));
        }
        None
    }
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Correct answers.
    pub ok: u64,
    /// Transport errors, non-200 answers and wrong answers.
    pub failed: u64,
    /// The first few failures, for the report.
    pub failures: Vec<String>,
    /// Latency of each correct answer, µs, sorted.
    pub latencies_us: Vec<u32>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of latency in ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        f64::from(self.latencies_us[index]) / 1000.0
    }

    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.latencies_us.extend(other.latencies_us);
        for failure in other.failures {
            if self.failures.len() < 5 {
                self.failures.push(failure);
            }
        }
    }
}

/// How requests are paced.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Every connection sends its next request as soon as the answer to the last arrives.
    Closed,
    /// This many requests per second in all, spread over the connections.
    Rate(f64),
}

/// Drives `connections` keep-alive connections for `duration`, cycling through `mix`. A
/// connection that fails is replaced by a new one (the failed request counts as failed).
pub async fn run(target: &Target, mix: Arc<[Request]>, connections: usize, pace: Pace, duration: Duration) -> Outcome {
    run_reconnecting(target, mix, connections, pace, duration, u64::MAX).await
}

/// [`run`], each connection closed and opened anew after `per_connection` requests, so new TLS
/// handshakes keep happening (what certificate rotation and draining act on).
pub async fn run_reconnecting(
    target: &Target,
    mix: Arc<[Request]>,
    connections: usize,
    pace: Pace,
    duration: Duration,
    per_connection: u64,
) -> Outcome {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (target, mix, next) = (target.clone(), Arc::clone(&mix), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            connection(target, mix, next, pace, started, duration, per_connection).await
        }));
    }
    let mut outcome = Outcome::default();
    for task in tasks {
        outcome.merge(task.await.expect("load task"));
    }
    outcome.elapsed = started.elapsed().min(duration.max(Duration::from_millis(1)));
    outcome.latencies_us.sort_unstable();
    outcome
}

async fn connection(
    target: Target,
    mix: Arc<[Request]>,
    next: Arc<AtomicU64>,
    pace: Pace,
    started: Instant,
    duration: Duration,
    per_connection: u64,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut sent_on_connection = 0u64;
    let fail = |outcome: &mut Outcome, why: String| {
        outcome.failed += 1;
        if outcome.failures.len() < 5 {
            outcome.failures.push(why);
        }
    };
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        // Closed loop: the clock starts now. Open loop: when the request is due; a connection
        // that wakes up for it starts the clock on waking (timer slack is the generator's, not
        // the server's), one that is late because it was busy is charged from the due time.
        let start = match pace {
            Pace::Closed => Instant::now(),
            Pace::Rate(rate) => {
                let due = started + Duration::from_secs_f64(index as f64 / rate);
                if due > started + duration {
                    break;
                }
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                }
            }
        };
        if started.elapsed() >= duration {
            break;
        }
        let request = &mix[(index % mix.len() as u64) as usize];
        if sent_on_connection >= per_connection {
            sender = None;
        }
        let mut send = match sender.take() {
            Some(open) if !open.is_closed() => open,
            _ => match target.connect().await {
                Ok(fresh) => {
                    sent_on_connection = 0;
                    fresh
                }
                Err(error) => {
                    fail(&mut outcome, error);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let http = request.http();
        sent_on_connection += 1;
        let answer = async {
            send.ready().await.map_err(|e| format!("connection: {e}"))?;
            let response = send.send_request(http).await.map_err(|e| format!("request: {e}"))?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(|e| format!("answer body: {e}"))?.to_bytes();
            Ok::<_, String>((status, body))
        }
        .await;
        match answer {
            Ok((status, body)) => match request.wrong_answer(status, &body) {
                None => {
                    outcome.ok += 1;
                    outcome.latencies_us.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    sender = Some(send);
                }
                Some(why) => {
                    fail(&mut outcome, why);
                    sender = Some(send);
                }
            },
            Err(why) => fail(&mut outcome, why),
        }
    }
    outcome
}

/// Sends one request on a new connection: the answer's HTTP status and body.
pub async fn exchange(target: &Target, request: &Request) -> Result<(u16, Bytes), String> {
    let mut send = target.connect().await?;
    let response = send.send_request(request.http()).await.map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| format!("answer body: {e}"))?.to_bytes();
    Ok((status, body))
}

/// Sends one request on a new connection: the answer's body if it is correct, else why not.
pub async fn answer(target: &Target, request: &Request) -> Result<String, String> {
    let (status, body) = exchange(target, request).await?;
    match request.wrong_answer(status, &body) {
        None => Ok(String::from_utf8_lossy(&body).into_owned()),
        Some(why) => Err(why),
    }
}
