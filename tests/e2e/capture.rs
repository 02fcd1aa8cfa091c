//! A webhook that records every AdmissionReview body the API server sends and allows it, so
//! the faster integration tests can replay real requests.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub struct Capture {
    pub addr: std::net::SocketAddr,
    pub bodies: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Capture {
    pub async fn start(cert_pem: &str, key_pem: &str) -> Self {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&bodies);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (acceptor, recorded) = (acceptor.clone(), Arc::clone(&recorded));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let recorded = Arc::clone(&recorded);
                        async move {
                            let body = request.into_body().collect().await?.to_bytes();
                            let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let uid = review["request"]["uid"].clone();
                            recorded.lock().unwrap().push(review);
                            let answer = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                                "response": {"uid": uid, "allowed": true}});
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(answer.to_string()))))
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        Self { addr, bodies, task }
    }

    /// Writes each body to `dir` as `<index>-<operation>-<kind>-<name>.json`.
    pub fn save(&self, dir: &PathBuf) -> Vec<PathBuf> {
        std::fs::create_dir_all(dir).unwrap();
        let bodies = self.bodies.lock().unwrap();
        bodies
            .iter()
            .enumerate()
            .map(|(i, review)| {
                let request = &review["request"];
                let name = format!(
                    "{:02}-{}-{}-{}.json",
                    i + 1,
                    request["operation"].as_str().unwrap_or("unknown").to_lowercase(),
                    request["kind"]["kind"].as_str().unwrap_or("unknown").to_lowercase(),
                    request["name"].as_str().unwrap_or("unknown"),
                );
                let path = dir.join(name);
                std::fs::write(&path, serde_json::to_string_pretty(review).unwrap() + "\n").unwrap();
                path
            })
            .collect()
    }
}
