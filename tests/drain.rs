//! Draining behind a client's keep-alive pool, as the API server keeps one: replica A drains
//! while keep-alive clients (HTTP/1.1 and HTTP/2) send back to back through the whole drain; the
//! test's "endpoints" move to replica B once A reports not ready. Every request gets its answer:
//! A tells its clients to leave (`Connection: close`, GOAWAY) instead of closing under them, and
//! a request still in flight when A stops accepting is answered within the grace period.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Client, TestServer, eventually, fixture, http_get};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What one keep-alive client saw.
#[derive(Debug, Default)]
struct Seen {
    /// Answers from each replica, by address.
    answered: Vec<SocketAddr>,
    /// Answers that carried `Connection: close` (HTTP/1.1) or ended the connection by GOAWAY.
    told_to_leave: usize,
    failures: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Protocol {
    Http1,
    Http2,
}

/// The address new connections go to, as Service endpoints would route them.
type Endpoint = Arc<Mutex<SocketAddr>>;

/// Sends reviews back to back on one keep-alive connection at a time until `stop`, opening a new
/// one (to the current endpoint) only when the server told it to leave.
async fn keep_alive_client(
    protocol: Protocol,
    endpoint: Endpoint,
    ca_pem: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let body = Bytes::from(fixture("deployment-create.json").to_string());
    while !stop.load(Ordering::SeqCst) {
        let addr = *endpoint.lock().unwrap();
        let client = Client { addr, ca_pem: ca_pem.clone() };
        let answered = || seen.lock().unwrap().answered.push(addr);
        let connection = match protocol {
            Protocol::Http1 => http1_connection(&client, &body, &stop, answered).await,
            Protocol::Http2 => http2_connection(&client, &body, &stop, answered).await,
        };
        let mut seen = seen.lock().unwrap();
        match connection {
            Ok(left) => seen.told_to_leave += usize::from(left),
            Err(why) => seen.failures.push(format!("{addr}: {why}")),
        }
    }
}

/// Requests on one HTTP/1.1 connection, calling `answered` for each answer; whether the server said `Connection: close`).
async fn http1_connection(
    client: &Client,
    body: &Bytes,
    stop: &AtomicBool,
    mut answered: impl FnMut(),
) -> Result<bool, String> {
    let stream = client.connect().await.map_err(|e| format!("connect: {e}"))?;
    let mut sender = common::http1(stream).await;
    let mut answers = 0;
    while !stop.load(Ordering::SeqCst) {
        let request = hyper::Request::post("/validate")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let response = sender.send_request(request).await.map_err(|e| format!("request {}: {e}", answers + 1))?;
        let close = response.headers().get("connection").is_some_and(|v| v == "close");
        answers += 1;
        read_answer(response, answers).await?;
        answered();
        if close {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Requests on one HTTP/2 connection, calling `answered` for each answer; whether the server sent GOAWAY).
async fn http2_connection(
    client: &Client,
    body: &Bytes,
    stop: &AtomicBool,
    mut answered: impl FnMut(),
) -> Result<bool, String> {
    let stream = client.connect_alpn(&[b"h2"]).await.map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let mut answers = 0;
    while !stop.load(Ordering::SeqCst) {
        // After GOAWAY the client opens no new stream here, as Go's HTTP/2 client does.
        if sender.ready().await.is_err() {
            return Ok(true);
        }
        let request = hyper::Request::post("https://127.0.0.1/validate")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            // A request hyper hands back was never written (the connection was closing after
            // GOAWAY), and one refused above GOAWAY's last stream id was not processed: both are
            // safe to send again, and Go's client does. Anything else is a failed request.
            Err(mut error) => {
                if error.take_message().is_some() || refused_unprocessed(error.error()) {
                    return Ok(true);
                }
                return Err(format!("request {}: {}", answers + 1, error.into_error()));
            }
        };
        answers += 1;
        read_answer(response, answers).await?;
        answered();
    }
    Ok(false)
}

/// Reads answer number `n` to its end; an error unless it is a 200.
async fn read_answer(response: hyper::Response<hyper::body::Incoming>, n: usize) -> Result<(), String> {
    let status = response.status();
    response.into_body().collect().await.map_err(|e| format!("answer {n}: {e}"))?;
    if status == 200 { Ok(()) } else { Err(format!("answer {n}: HTTP {status}")) }
}

fn refused_unprocessed(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = cause.source();
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_behind_keep_alive_pools_fails_no_request() {
    let drain_delay = Duration::from_millis(1500);
    let mut a = TestServer::start_with(|config| config.limits.drain_delay = drain_delay).await;
    // B trusts the same CA: both replicas serve one Service's name.
    let (cert, key) = a.pki.issue();
    let b_certs = a.temp.path().join("b-certs");
    std::fs::create_dir(&b_certs).unwrap();
    let b_mount = common::SecretMount::new(&b_certs, &cert, &key);
    let b = TestServer::start_with(|config| {
        config.tls_cert = b_mount.cert();
        config.tls_key = b_mount.key();
    })
    .await;
    let ca = a.pki.ca_pem.clone();
    let endpoint: Endpoint = Arc::new(Mutex::new(a.tls_addr));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for protocol in [Protocol::Http1, Protocol::Http1, Protocol::Http1, Protocol::Http2, Protocol::Http2] {
        let (endpoint, ca, stop) = (Arc::clone(&endpoint), ca.clone(), Arc::clone(&stop));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(keep_alive_client(protocol, endpoint, ca, stop, Arc::clone(&seen)));
        clients.push((protocol, seen, task));
    }
    // Whether every client has been answered by `replica` (on a connection that ended).
    let all_answered_by = |replica: SocketAddr| {
        let seen: Vec<_> = clients.iter().map(|(_, seen, _)| Arc::clone(seen)).collect();
        move || {
            let done = seen.iter().all(|s| s.lock().unwrap().answered.contains(&replica));
            async move { done }
        }
    };
    // A request that is still in flight when A stops accepting: its headers and half its body
    // now, the rest once A refuses new connections.
    let review = fixture("statefulset-create.json").to_string();
    let mut in_flight = a.client().connect().await.unwrap();
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        review.len()
    );
    let (first, rest) = review.as_bytes().split_at(review.len() / 2);
    in_flight.write_all(head.as_bytes()).await.unwrap();
    in_flight.write_all(first).await.unwrap();

    let a_addr = a.tls_addr;
    let ops = a.ops_addr;
    assert!(eventually(Duration::from_secs(5), all_answered_by(a_addr)).await, "every client is answered by A");
    let server = a.server.take().unwrap();
    let draining = tokio::spawn(server.shutdown());
    // The endpoints follow A's readiness, as the endpoints controller does.
    assert!(eventually(Duration::from_secs(2), || async { http_get(ops, "/readyz").await.0 == 503 }).await);
    *endpoint.lock().unwrap() = b.tls_addr;
    // A stops accepting at the end of its drain delay; then the held request is finished.
    let stopped_accepting =
        eventually(Duration::from_secs(5), || async { tokio::net::TcpStream::connect(a_addr).await.is_err() }).await;
    assert!(stopped_accepting, "A stops accepting after its drain delay");
    in_flight.write_all(rest).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), in_flight.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    draining.await.unwrap();
    assert!(eventually(Duration::from_secs(5), all_answered_by(b.tls_addr)).await, "every client moved to B");
    stop.store(true, Ordering::SeqCst);
    for (protocol, seen, task) in clients {
        task.await.unwrap();
        let seen = seen.lock().unwrap();
        let on_a = seen.answered.iter().filter(|addr| **addr == a_addr).count();
        let on_b = seen.answered.len() - on_a;
        println!("{protocol:?}: {on_a} answers from A, {on_b} from B, told to leave {} times", seen.told_to_leave);
        assert_eq!(seen.failures, Vec::<String>::new(), "{protocol:?}");
        assert!(on_a > 0 && on_b > 0, "{protocol:?}: {on_a} answers from A, {on_b} from B");
        assert!(seen.told_to_leave >= 1, "{protocol:?}: A never told the client to leave");
    }
}
