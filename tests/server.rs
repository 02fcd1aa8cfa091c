//! The real server over real TLS on loopback: correct answers to real API-server requests,
//! and a clear refusal for every kind of bad input.

mod common;

use bytes::Bytes;
use common::{TestServer, fixture, review};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn answers_real_api_server_requests_echoing_the_uid() {
    let server = TestServer::start().await;
    for name in [
        "configmap-create-allowed.json",
        "configmap-create-denied.json",
        "configmap-update-helm-upgrade.json",
        "deployment-create.json",
        "statefulset-create.json",
        "statefulset-update.json",
    ] {
        let body = fixture(name);
        for path in ["/validate", "/mutate"] {
            let (status, answer) = server.post(path, body.to_string()).await;
            assert_eq!(status, 200, "{name} {path}: {answer}");
            assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{name}");
            assert_eq!(answer["kind"], "AdmissionReview", "{name}");
            assert_eq!(answer["response"]["uid"], body["request"]["uid"], "{name}");
            // None of the captured objects is a DX object: all are allowed untouched.
            assert_eq!(answer["response"]["allowed"], true, "{name}");
            assert!(answer["response"].get("patch").is_none(), "{name}");
        }
    }
}

#[tokio::test]
async fn answers_every_operation_and_leaves_other_kinds_alone() {
    let server = TestServer::start().await;
    let broken_pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "dx",
        "labels": {"app.kubernetes.io/part-of": "dx"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    let answer = server.validate(&review("CREATE", Some(&broken_pod), None)).await;
    assert_eq!(answer["allowed"], true);
    let config = fixture("configmap-create-allowed.json")["request"]["object"].clone();
    for (operation, object, old) in [
        ("CREATE", Some(&config), None),
        ("UPDATE", Some(&config), Some(&config)),
        ("DELETE", None, Some(&config)),
        ("CONNECT", Some(&config), None),
    ] {
        let body = review(operation, object, old);
        let answer = server.validate(&body).await;
        assert_eq!(answer["uid"], body["request"]["uid"], "{operation}");
        assert_eq!(answer["allowed"], true, "{operation}");
    }
}

#[tokio::test]
async fn speaks_http2_as_well() {
    let server = TestServer::start().await;
    let stream = server.client().connect_alpn(&[b"h2"]).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let body = fixture("deployment-create.json");
    let request = hyper::Request::post("https://127.0.0.1/validate")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    use http_body_util::BodyExt;
    let answer: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(answer["response"]["uid"], body["request"]["uid"]);
}

/// Every bad input gets its status and a JSON body whose message names the problem.
#[tokio::test]
async fn refuses_bad_input_with_a_clear_reason() {
    let server = TestServer::start().await;
    let good = fixture("statefulset-create.json");
    let with = |pointer: &str, value: Value| {
        let mut body = good.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        body.to_string()
    };
    let without = |parent: &str, key: &str| {
        let mut body = good.clone();
        body.pointer_mut(parent).unwrap().as_object_mut().unwrap().remove(key);
        body.to_string()
    };
    let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
    let deep_object = with("/request/object/metadata/annotations", {
        let mut v = json!("x");
        for _ in 0..120 {
            v = json!({ "a": v });
        }
        v
    });
    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        ("empty body", String::new(), "application/json", 400, "request body is empty"),
        (
            "truncated JSON",
            good.to_string()[..200].to_owned(),
            "application/json",
            400,
            "request body is not a valid AdmissionReview: EOF while parsing",
        ),
        (
            "not JSON",
            "kind: AdmissionReview".into(),
            "application/json",
            400,
            "request body is not a valid AdmissionReview: expected value",
        ),
        (
            "JSON array",
            "[]".into(),
            "application/json",
            400,
            "request body is not a valid AdmissionReview: invalid type: sequence",
        ),
        ("deep nesting", deep, "application/json", 400, "request body nests JSON deeper than 100 levels"),
        ("deep object", deep_object, "application/json", 400, "request body nests JSON deeper than 100 levels"),
        (
            "v1beta1",
            with("/apiVersion", json!("admission.k8s.io/v1beta1")),
            "application/json",
            400,
            "apiVersion \"admission.k8s.io/v1beta1\" is not supported: dx-admission speaks admission.k8s.io/v1 only (set admissionReviewVersions: [v1])",
        ),
        ("missing apiVersion", without("", "apiVersion"), "application/json", 400, "missing field `apiVersion`"),
        (
            "wrong kind",
            with("/kind", json!("ConversionReview")),
            "application/json",
            400,
            "kind \"ConversionReview\" is not AdmissionReview",
        ),
        ("no request", without("", "request"), "application/json", 400, "AdmissionReview has no request"),
        ("missing uid", without("/request", "uid"), "application/json", 400, "missing field `uid`"),
        (
            "empty uid",
            with("/request/uid", json!("")),
            "application/json",
            400,
            "AdmissionReview request has an empty uid",
        ),
        (
            "unknown operation",
            with("/request/operation", json!("PATCH")),
            "application/json",
            400,
            "unknown variant `PATCH`",
        ),
        (
            "object of another kind",
            with("/request/object/kind", json!("Deployment")),
            "application/json",
            400,
            "request.object is a Deployment, but request.kind says StatefulSet",
        ),
        (
            "object of the wrong shape",
            with("/request/object/spec/replicas", json!("three")),
            "application/json",
            400,
            "request.object is not a valid StatefulSet: invalid type: string \"three\", expected i32",
        ),
        (
            "object is not an object",
            with("/request/object", json!("x")),
            "application/json",
            400,
            "request.object is not a valid StatefulSet: invalid type: string \"x\", expected StatefulSet",
        ),
        (
            "missing object on CREATE",
            with("/request/object", Value::Null),
            "application/json",
            400,
            "request.object is missing for a CREATE of a StatefulSet",
        ),
        (
            "oldObject of the wrong shape",
            with(
                "/request/oldObject",
                json!({"kind": "StatefulSet", "apiVersion": "apps/v1", "metadata": {"name": "s"}, "spec": {"replicas": []}}),
            ),
            "application/json",
            400,
            "request.oldObject is not a valid StatefulSet",
        ),
        ("request is null", with("/request", Value::Null), "application/json", 400, "AdmissionReview has no request"),
        (
            "request is a list",
            with("/request", json!([])),
            "application/json",
            400,
            "invalid type: sequence, expected struct AdmissionRequest",
        ),
        (
            "uid is a number",
            with("/request/uid", json!(7)),
            "application/json",
            400,
            "invalid type: integer `7`, expected a string",
        ),
        ("missing request.kind", without("/request", "kind"), "application/json", 400, "missing field `kind`"),
        (
            "lower-case operation",
            with("/request/operation", json!("create")),
            "application/json",
            400,
            "unknown variant `create`",
        ),
        (
            "dryRun is a string",
            with("/request/dryRun", json!("yes")),
            "application/json",
            400,
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            "missing object on UPDATE",
            {
                let mut b = good.clone();
                b["request"]["operation"] = json!("UPDATE");
                b["request"]["object"] = Value::Null;
                b.to_string()
            },
            "application/json",
            400,
            "request.object is missing for a UPDATE of a StatefulSet",
        ),
        (
            "oldObject of another kind",
            with("/request/oldObject", json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "x"}})),
            "application/json",
            400,
            "request.oldObject is a ConfigMap, but request.kind says StatefulSet",
        ),
        (
            "name is a number",
            with("/request/object/metadata/name", json!(5)),
            "application/json",
            400,
            "request.object is not a valid StatefulSet: invalid type: integer `5`, expected a string",
        ),
        ("trailing garbage", format!("{good} {{}}"), "application/json", 400, "trailing characters"),
        ("byte order mark", format!("\u{feff}{good}"), "application/json", 400, "expected value at line 1 column 1"),
        (
            "duplicate request",
            format!("{},\"request\":{{\"uid\":\"second\"}}}}", &good.to_string()[..good.to_string().len() - 1]),
            "application/json",
            400,
            "duplicate field `request`",
        ),
        (
            "a bare string",
            "\"AdmissionReview\"".into(),
            "application/json",
            400,
            "invalid type: string \"AdmissionReview\"",
        ),
        ("whitespace only", "  \n\t ".into(), "application/json", 400, "request body is empty"),
        (
            "missing content type",
            good.to_string(),
            "",
            415,
            "content type \"\" is not supported; send application/json",
        ),
        (
            "wrong content type",
            good.to_string(),
            "text/plain",
            415,
            "content type \"text/plain\" is not supported; send application/json",
        ),
        ("form content type", good.to_string(), "application/x-www-form-urlencoded", 415, "send application/json"),
    ];
    let total = cases.len();
    for (name, body, content_type, status, message) in cases {
        let (got_status, answer) = server.client().post("/validate", content_type, Bytes::from(body)).await;
        assert_eq!(got_status, status, "{name}: {answer}");
        let text = answer["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{name}: {text:?} should contain {message:?}");
        assert!(answer["error"].is_string(), "{name}: {answer}");
    }
    // Non-UTF-8 bytes.
    let (status, answer) =
        server.client().post("/validate", "application/json", Bytes::from_static(b"\xff\xfe{}")).await;
    assert_eq!(status, 400, "{answer}");
    // Every refusal is counted, by reason.
    let (_, metrics) = server.ops("/metrics").await;
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("dx_admission_bad_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted as usize, total + 1, "{metrics}");
    assert!(metrics.contains("dx_admission_bad_requests_total{reason=\"too_deep\"} 2"), "{metrics}");
    assert!(metrics.contains("dx_admission_bad_requests_total{reason=\"media_type\"} 3"), "{metrics}");
    // The server is healthy after all of it.
    let answer = server.validate(&good).await;
    assert_eq!(answer["allowed"], true);
}

/// What must be accepted: media-type parameters and case, HTTP/1.0, and large values within the limit.
#[tokio::test]
async fn accepts_every_valid_form_of_a_request() {
    let server = TestServer::start().await;
    let body = fixture("deployment-create.json");
    for content_type in ["application/json; charset=utf-8", "APPLICATION/JSON", "application/json ; charset=UTF-8"] {
        let (status, answer) = server.client().post("/validate", content_type, Bytes::from(body.to_string())).await;
        assert_eq!(status, 200, "{content_type}: {answer}");
        assert_eq!(answer["response"]["uid"], body["request"]["uid"]);
    }
    // A value of 2 MiB (the API server's object limit is 1.5 MiB) is fine.
    let mut big = fixture("configmap-create-allowed.json");
    big["request"]["object"]["data"] = json!({"big": "x".repeat(2 * 1024 * 1024)});
    let (status, answer) = server.post("/validate", big.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response"]["allowed"], true);
    // A list of 200,000 items is shallow and within the limit.
    let mut wide = fixture("configmap-create-allowed.json");
    wide["request"]["object"]["metadata"]["finalizers"] = json!(vec!["x"; 200_000]);
    let (status, _) = server.post("/validate", wide.to_string()).await;
    assert_eq!(status, 200);
    // HTTP/1.0, as a bare request on the TLS stream.
    let mut stream = server.client().connect().await.unwrap();
    let text = body.to_string();
    let request = format!(
        "POST /validate HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(answer.contains(body["request"]["uid"].as_str().unwrap()), "{answer}");
}

#[tokio::test]
async fn refuses_oversize_bodies_with_413() {
    let server = TestServer::start().await;
    let mut body = fixture("configmap-create-allowed.json");
    body["request"]["object"]["data"] = json!({"big": "x".repeat(3 * 1024 * 1024)});
    let (status, answer) = server.post("/validate", body.to_string()).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["message"], "request body is larger than the 3145728 byte limit");

    // Chunked (no Content-Length): the limit holds while reading.
    let mut sender = common::http1(server.client().connect().await.unwrap()).await;
    let chunks = Chunked([Bytes::from(vec![b' '; 2 * 1024 * 1024]), Bytes::from(vec![b' '; 2 * 1024 * 1024])].into());
    let request = hyper::Request::post("/validate")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(chunks)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 413);
}

/// The 413 and its reason reach a client that sends a 5 MB body and then closes, on HTTP/1.1
/// (`Connection: close`, declared length or chunked) and on HTTP/2: the server reads and discards
/// the rest of the body before it answers, so the client is never reset mid-send.
#[tokio::test]
async fn the_413_reaches_clients_that_close_or_multiplex() {
    use http_body_util::BodyExt;
    let server = TestServer::start().await;
    let five_mb = || Bytes::from(vec![b' '; 5 * 1024 * 1024]);
    let expect_413 = |status: hyper::StatusCode, body: Bytes, case: &str| {
        assert_eq!(status, 413, "{case}");
        let answer: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(
            answer,
            json!({"error": "too_large", "message": "request body is larger than the 3145728 byte limit"}),
            "{case}"
        );
    };
    for (chunked, connection) in [(false, "close"), (true, "close"), (false, "keep-alive"), (true, "keep-alive")] {
        let case = format!("HTTP/1.1 chunked={chunked} connection: {connection}");
        let mut sender = common::http1(server.client().connect().await.unwrap()).await;
        let request = hyper::Request::post("/validate")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .header("connection", connection);
        let response = if chunked {
            let body = Chunked([five_mb()].into());
            sender.send_request(request.body(body.boxed()).unwrap()).await
        } else {
            let body = http_body_util::Full::new(five_mb());
            sender.send_request(request.body(body.boxed()).unwrap()).await
        };
        let response = response.unwrap_or_else(|e| panic!("{case}: no answer: {e}"));
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        expect_413(status, body, &case);
        if connection == "keep-alive" {
            // The body was read to its end, so the connection is still good for the next review.
            sender.ready().await.unwrap_or_else(|e| panic!("{case}: the connection was closed: {e}"));
            let review = Bytes::from(fixture("deployment-create.json").to_string());
            let request = hyper::Request::post("/validate")
                .header("host", "127.0.0.1")
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(review).boxed())
                .unwrap();
            assert_eq!(sender.send_request(request).await.unwrap().status(), 200, "{case}");
        }
    }
    let stream = server.client().connect_alpn(&[b"h2"]).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::post("https://127.0.0.1/validate")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(five_mb()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap_or_else(|e| panic!("HTTP/2: no answer: {e}"));
    let status = response.status();
    let body = response.into_body().collect().await.unwrap_or_else(|e| panic!("HTTP/2: body: {e}")).to_bytes();
    expect_413(status, body, "HTTP/2");
    // The HTTP/2 connection still serves.
    let body = fixture("deployment-create.json");
    let request = hyper::Request::post("https://127.0.0.1/validate")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
}

/// A body that trickles (its headers, then a few bytes, then nothing) is cut off at the review
/// deadline with 408 and the reason.
#[tokio::test]
async fn a_trickling_body_gets_408_at_the_review_deadline() {
    let server =
        TestServer::start_with(|config| config.limits.review_timeout = std::time::Duration::from_millis(300)).await;
    let mut stream = server.client().connect().await.unwrap();
    stream
        .write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"api")
        .await
        .unwrap();
    // Read until the JSON body has closed (the answer may come in more than one TLS record).
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        while !answer.ends_with(b"}") {
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
    });
    read.await.expect("an answer before the test's own timeout");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
    assert!(
        answer
            .ends_with("\r\n\r\n{\"error\":\"body_timeout\",\"message\":\"request body did not arrive within 0.3s\"}"),
        "{answer}"
    );
}

/// A body without a size hint, so hyper sends it with chunked transfer encoding.
struct Chunked(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|chunk| Ok(hyper::body::Frame::data(chunk))))
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_get_404_and_405() {
    let server = TestServer::start().await;
    let (status, answer) = server.post("/admit", "{}").await;
    assert_eq!(status, 404);
    assert_eq!(answer["message"], "no such endpoint /admit; use POST /validate or POST /mutate");
    let mut sender = common::http1(server.client().connect().await.unwrap()).await;
    let request =
        hyper::Request::get("/validate").header("host", "x").body(http_body_util::Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 405);
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"error": "method", "message": "method GET is not allowed; use POST"})
    );
    let (status, body) = server.ops("/nothing").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn plaintext_http_and_tls_garbage_on_the_tls_port_are_dropped_and_harmless() {
    let server = TestServer::start().await;
    let mut plain = tokio::net::TcpStream::connect(server.tls_addr).await.unwrap();
    plain.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}").await.unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), plain.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "the server closes a plaintext connection");
    assert!(!String::from_utf8_lossy(&buffer).contains("AdmissionReview"));
    let mut garbage = tokio::net::TcpStream::connect(server.tls_addr).await.unwrap();
    garbage.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3]).await.unwrap();
    drop(garbage);
    let answer = server.validate(&fixture("deployment-create.json")).await;
    assert_eq!(answer["allowed"], true);
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let server =
        TestServer::start_with(|config| config.limits.header_read_timeout = std::time::Duration::from_millis(300))
            .await;
    let mut stream = server.client().connect().await.unwrap();
    stream.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buffer = Vec::new();
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "connection closed by the server");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

/// One whole HTTP/1.1 request for `/validate` with `body`.
fn raw_validate(body: &str) -> String {
    format!(
        "POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one response (headers and a Content-Length body) off an HTTP/1.1 stream.
async fn read_response(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "the server closed the connection mid-response");
        received.push(byte[0]);
    }
    let head = String::from_utf8(received).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length: ").map(|n| n.parse().unwrap()))
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head + &String::from_utf8(body).unwrap()
}

/// The API server reuses an idle connection for the next review without retrying a POST the
/// server closed under it: waiting longer than the header-read timeout between two requests
/// must not end the connection.
#[tokio::test]
async fn a_kept_alive_connection_outlives_the_header_read_timeout() {
    let server = TestServer::start_with(|config| {
        config.limits.header_read_timeout = std::time::Duration::from_millis(200);
        config.limits.idle_timeout = std::time::Duration::from_secs(60);
    })
    .await;
    let body = fixture("deployment-create.json").to_string();
    let mut stream = server.client().connect().await.unwrap();
    for _ in 0..2 {
        stream.write_all(raw_validate(&body).as_bytes()).await.unwrap();
        let response = read_response(&mut stream).await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        // Idle five times the header-read timeout: the behaviour under test, not a wait for it.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let idle = std::time::Duration::from_millis(700);
    let server = TestServer::start_with(|config| config.limits.idle_timeout = idle).await;
    let mut stream = server.client().connect().await.unwrap();
    stream.write_all(raw_validate(&fixture("deployment-create.json").to_string()).as_bytes()).await.unwrap();
    let response = read_response(&mut stream).await;
    let answered = std::time::Instant::now();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the idle connection is still open after 10 s");
    assert!(answered.elapsed() >= idle, "closed {:?} after the answer, before the idle timeout", answered.elapsed());
    assert_eq!(String::from_utf8_lossy(&rest), "", "nothing is sent on an idle connection before it closes");
}

/// The header-read timeout runs again from the first byte of a next request.
#[tokio::test]
async fn slow_headers_of_a_next_request_are_cut_off() {
    let server = TestServer::start_with(|config| {
        config.limits.header_read_timeout = std::time::Duration::from_millis(300);
        config.limits.idle_timeout = std::time::Duration::from_secs(60);
    })
    .await;
    let mut stream = server.client().connect().await.unwrap();
    stream.write_all(raw_validate(&fixture("deployment-create.json").to_string()).as_bytes()).await.unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    stream.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a next request's slow headers kept the connection open for 10 s");
    assert_eq!(String::from_utf8_lossy(&rest), "", "a slow client is dropped, not answered");
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served_on_their_own_port() {
    let server = TestServer::start().await;
    assert_eq!(server.ops("/healthz").await, (200, "ok".into()));
    assert_eq!(server.ops("/readyz").await, (200, "ok".into()));
    server.validate(&fixture("deployment-create.json")).await;
    let (status, text) = server.ops("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "dx_admission_reviews_total{endpoint=\"validate\",kind=\"Deployment\",operation=\"CREATE\",verdict=\"allowed\"} 1",
        "# TYPE dx_admission_review_duration_seconds histogram",
        "# TYPE dx_admission_reviews_in_flight gauge",
        "# TYPE dx_admission_tls_certificate_expiry_timestamp_seconds gauge",
        "# TYPE dx_admission_tls_reloads counter",
        "# TYPE dx_admission_schema_reloads counter",
    ] {
        assert!(text.contains(name), "metrics lack {name:?}:\n{text}");
    }
    assert!(server.metric("dx_admission_tls_certificate_expiry_timestamp_seconds").await > 1.7e9);
    // The admission port does not serve health, and the ops port does not review.
    let (status, _) = server.post("/healthz", "{}").await;
    assert_eq!(status, 404);
}
