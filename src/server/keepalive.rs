//! HTTP/1.1 keep-alive without a race: a header-read timeout that runs from a request's first
//! byte, and a separate, longer idle timeout between requests.
//!
//! hyper's own header-read timeout also runs while a kept-alive connection waits for its next
//! request, so it would close every idle connection a few seconds after its last answer. The API
//! server keeps idle connections to a webhook for 90 s and does not retry a POST on a connection
//! the server closes under it: a review sent just as the close happens fails the call ("use of
//! closed network connection"), and with `failurePolicy: Fail` the change is refused. So idle
//! connections are kept longer than the client keeps them: the client always closes first.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Where a connection is between two requests, and since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Answered; no byte of the next request yet.
    Idle(Instant),
    /// A request has begun (or the connection is new) and its headers are not all read.
    ReadingHeaders(Instant),
    /// Headers read: the review deadline covers the rest.
    Serving,
}

/// Which deadline a connection missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// Its request headers took longer than the header-read timeout (a slow or stuck client).
    Headers,
    /// It waited longer than the idle timeout for a next request.
    Idle,
}

/// The deadlines of one HTTP/1.1 connection, fed by its reads and by its service.
pub struct Clock {
    phase: Mutex<Phase>,
    changed: Notify,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl Clock {
    /// A new connection must send its first request's headers within the header-read timeout.
    pub fn new(header_read_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            phase: Mutex::new(Phase::ReadingHeaders(Instant::now())),
            changed: Notify::new(),
            header_read_timeout,
            idle_timeout,
        })
    }

    fn set(&self, next: impl FnOnce(Phase) -> Option<Phase>) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(next) = next(*phase) {
            *phase = next;
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: if the connection was idle, a request has begun.
    fn bytes_read(&self) {
        self.set(|phase| matches!(phase, Phase::Idle(_)).then(|| Phase::ReadingHeaders(Instant::now())));
    }

    /// The service has a request: its headers are complete.
    pub fn request_received(&self) {
        self.set(|_| Some(Phase::Serving));
    }

    /// The service answered: the connection is idle until the next request's first byte.
    pub fn answered(&self) {
        self.set(|_| Some(Phase::Idle(Instant::now())));
    }

    fn deadline(&self) -> Option<(Instant, Expired)> {
        match *self.phase.lock().unwrap_or_else(PoisonError::into_inner) {
            Phase::Idle(since) => Some((since + self.idle_timeout, Expired::Idle)),
            Phase::ReadingHeaders(since) => Some((since + self.header_read_timeout, Expired::Headers)),
            Phase::Serving => None,
        }
    }

    /// Resolves once the connection misses a deadline of the phase it is in.
    pub async fn expired(&self) -> Expired {
        loop {
            // A change since the last look leaves a permit: the new phase is read at once.
            let changed = self.changed.notified();
            match self.deadline() {
                None => changed.await,
                Some((at, expired)) => tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep_until(at) => {
                        if self.deadline() == Some((at, expired)) {
                            return expired;
                        }
                    }
                },
            }
        }
    }
}

/// A connection's stream that tells its [`Clock`] when bytes arrive.
pub struct Timed<S> {
    inner: S,
    clock: Option<Arc<Clock>>,
}

impl<S> Timed<S> {
    /// `clock` is `None` where nothing is timed (HTTP/2 has no header-read or idle timeout here).
    pub fn new(inner: S, clock: Option<Arc<Clock>>) -> Self {
        Self { inner, clock }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before
            && let Some(clock) = &self.clock
        {
            clock.bytes_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADERS: Duration = Duration::from_secs(5);
    const IDLE: Duration = Duration::from_secs(120);

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_has_the_header_timeout_for_its_first_request() {
        let started = Instant::now();
        let clock = Clock::new(HEADERS, IDLE);
        assert_eq!(clock.expired().await, Expired::Headers);
        assert_eq!(started.elapsed(), HEADERS);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answered_connection_waits_the_idle_timeout_not_the_header_timeout() {
        let clock = Clock::new(HEADERS, IDLE);
        clock.request_received();
        tokio::time::advance(Duration::from_secs(30)).await;
        clock.answered();
        let answered = Instant::now();
        assert_eq!(clock.expired().await, Expired::Idle);
        assert_eq!(answered.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_a_next_request_starts_the_header_timeout() {
        let clock = Clock::new(HEADERS, IDLE);
        clock.request_received();
        clock.answered();
        let waiting = {
            let clock = Arc::clone(&clock);
            tokio::spawn(async move { clock.expired().await })
        };
        tokio::time::advance(Duration::from_secs(60)).await;
        clock.bytes_read();
        let first_byte = Instant::now();
        assert_eq!(waiting.await.unwrap(), Expired::Headers);
        assert_eq!(first_byte.elapsed(), HEADERS);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_of_a_request_being_served_start_nothing() {
        let clock = Clock::new(HEADERS, IDLE);
        clock.request_received();
        clock.bytes_read();
        let served = tokio::time::timeout(Duration::from_secs(3600), clock.expired()).await;
        assert!(served.is_err(), "a request being served has no header or idle deadline");
    }
}
