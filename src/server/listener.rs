//! The TLS accept loop: handshakes under a timeout, HTTP/1.1 and HTTP/2, HTTP/1.1 with a
//! header-read and an idle timeout ([`super::keepalive`]), a drain that moves clients off before
//! anything is closed, and a graceful close of every connection when asked to stop.
//!
//! Clients such as the API server pool keep-alive connections and reuse them without looking at
//! endpoints, and a POST on a connection the server closes is not retried. So while draining,
//! clients are told to leave rather than left: every HTTP/1.1 answer carries `Connection: close`
//! and every HTTP/2 connection gets GOAWAY (streams already sent are still answered). Only when
//! the drain delay is over does the loop stop accepting and close what is left.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Response, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use super::Limits;
use super::keepalive::{Clock, Expired, Timed};

/// A client must finish the TLS handshake within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// When the server drains and when it stops.
#[derive(Clone)]
pub struct Stopping {
    /// SIGTERM: tell clients to move off, keep answering.
    pub draining: CancellationToken,
    /// After the drain delay: stop accepting, close every connection once its requests are done.
    pub stop: CancellationToken,
}

pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<super::tls::Tls>,
    router: Router,
    limits: Limits,
    stopping: Stopping,
) {
    let connections = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header-read timeout is the connection clock's: hyper's would also end idle connections.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            () = stopping.stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Answers are small and written at once: send them without waiting for Nagle's timer.
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%error, %peer, "TCP_NODELAY not set");
        }
        // The newest configuration: a reloaded client CA bundle applies to new handshakes.
        let acceptor = TlsAcceptor::from(tls.current());
        let (router, builder, stopping, limits) =
            (router.clone(), Arc::clone(&builder), stopping.clone(), limits.clone());
        connections.spawn(async move {
            let tls_stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => tls_stream,
                Ok(Err(error)) => {
                    debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let http2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let clock = (!http2).then(|| Clock::new(limits.header_read_timeout, limits.idle_timeout));
            // Cancelled once the connection has answered a request: before that, hyper would end it
            // on the spot (still in its handshake), resetting the request the client is sending.
            let answered = CancellationToken::new();
            let (draining, answering) = (stopping.draining.clone(), answered.clone());
            let (receiving, answering_clock) = (clock.clone(), clock.clone());
            let service = router
                .map_request(move |request: axum::http::Request<hyper::body::Incoming>| {
                    if let Some(clock) = &receiving {
                        clock.request_received();
                    }
                    request
                })
                .map_response(move |mut response: Response<axum::body::Body>| {
                    answering.cancel();
                    if let Some(clock) = &answering_clock {
                        clock.answered();
                    }
                    if !http2 && draining.is_cancelled() {
                        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    response
                });
            let timed = Timed::new(tls_stream, clock.clone());
            let connection = builder.serve_connection(TokioIo::new(timed), TowerToHyperService::new(service));
            let mut connection = std::pin::pin!(connection);
            // HTTP/2 is sent GOAWAY as soon as the drain starts; HTTP/1.1 is closed only at the
            // stop (an idle one closed earlier races a request the client is already sending).
            // Either waits for its first answer: a connection that has sent nothing yet is ended
            // by the header-read timeout (HTTP/1.1) or the grace period.
            let leave_at = if http2 { stopping.draining } else { stopping.stop };
            let leave = async {
                leave_at.cancelled().await;
                answered.cancelled().await;
            };
            let expired = async {
                match &clock {
                    Some(clock) => clock.expired().await,
                    None => std::future::pending().await,
                }
            };
            let ended = tokio::select! {
                ended = connection.as_mut() => Some(ended),
                () = leave => None,
                expired = expired => match expired {
                    // As a slow client is treated: the connection is dropped, nothing answered.
                    Expired::Headers => {
                        debug!(%peer, "request headers not read in time");
                        return;
                    }
                    // Idle longer than any client keeps a connection: closed gracefully.
                    Expired::Idle => None,
                },
            };
            let ended = match ended {
                Some(ended) => ended,
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                debug!(error = %error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.shutdown_grace, connections.wait()).await.is_err() {
        warn!(grace = ?limits.shutdown_grace, "grace period over; closing the remaining connections");
    }
}
