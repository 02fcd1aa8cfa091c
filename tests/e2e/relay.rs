//! A TCP relay between a replica and the API server that a test can break, as a network can:
//! `stall` holds every byte in both directions (a partition that drops packets: requests time
//! out), `refuse` closes every connection and each new one at once (requests fail fast), `heal`
//! lets bytes flow again. `retarget` sends new connections elsewhere while open ones stay where
//! they are, as Service endpoints move when a replica turns not ready; with several upstreams,
//! new connections go to each in turn, as a Service balances connections over its endpoints.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Open,
    Stalled,
    Refusing,
}

pub struct Relay {
    pub addr: SocketAddr,
    upstreams: Arc<Mutex<Vec<SocketAddr>>>,
    /// Connections accepted, per upstream they went to.
    pub connections: Arc<Mutex<std::collections::BTreeMap<SocketAddr, usize>>>,
    state: watch::Sender<State>,
    stop: CancellationToken,
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::round_robin(vec![upstream]).await
    }

    /// A relay that sends each new connection to the next of `upstreams`.
    pub async fn round_robin(upstreams: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay port");
        let addr = listener.local_addr().unwrap();
        let (state, _) = watch::channel(State::Open);
        let stop = CancellationToken::new();
        let (states, halt) = (state.clone(), stop.clone());
        let upstreams = Arc::new(Mutex::new(upstreams));
        let connections = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let (targets, counts) = (Arc::clone(&upstreams), Arc::clone(&connections));
        tokio::spawn(async move {
            for accepted in 0usize.. {
                let downstream = tokio::select! {
                    () = halt.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok((stream, _)) => stream, Err(_) => continue },
                };
                if *states.borrow() == State::Refusing {
                    continue;
                }
                let upstream = {
                    let targets = targets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    // No endpoint yet: the connection is refused, as by a Service without one.
                    let Some(upstream) = targets.get(accepted % targets.len().max(1)) else { continue };
                    *upstream
                };
                *counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(upstream).or_insert(0) += 1;
                tokio::spawn(relay(downstream, upstream, states.subscribe(), halt.clone()));
            }
        });
        Self { addr, upstreams, connections, state, stop }
    }

    /// New connections go to `upstream` from now on.
    pub fn retarget(&self, upstream: SocketAddr) {
        self.retarget_all(vec![upstream]);
    }

    /// New connections go to each of `upstreams` in turn from now on.
    pub fn retarget_all(&self, upstreams: Vec<SocketAddr>) {
        *self.upstreams.lock().unwrap() = upstreams;
    }

    pub fn stall(&self) {
        self.state.send_replace(State::Stalled);
    }

    pub fn refuse(&self) {
        self.state.send_replace(State::Refusing);
    }

    pub fn heal(&self) {
        self.state.send_replace(State::Open);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn relay(downstream: TcpStream, upstream: SocketAddr, state: watch::Receiver<State>, stop: CancellationToken) {
    let Ok(upstream) = TcpStream::connect(upstream).await else { return };
    let (down_read, down_write) = downstream.into_split();
    let (up_read, up_write) = upstream.into_split();
    tokio::select! {
        () = stop.cancelled() => {}
        () = pump(down_read, up_write, state.clone()) => {}
        () = pump(up_read, down_write, state) => {}
    }
}

/// Copies one direction while the relay is open; returns (closing both) when either side closes
/// or the relay starts refusing.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut state: watch::Receiver<State>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if !open(&mut state).await {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            () = refused(&mut state) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just before a stall are held until it heals.
        if !open(&mut state).await || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits until the relay is open (true) or refusing (false).
async fn open(state: &mut watch::Receiver<State>) -> bool {
    match state.wait_for(|s| *s != State::Stalled).await {
        Ok(s) => *s == State::Open,
        Err(_) => false,
    }
}

async fn refused(state: &mut watch::Receiver<State>) {
    let _ = state.wait_for(|s| *s == State::Refusing).await;
}
