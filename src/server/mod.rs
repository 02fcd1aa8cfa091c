//! The server: admission endpoints over TLS, health and metrics over plain HTTP on their own
//! port, hot reload of certificates and schemas, and a graceful drain on shutdown.

mod body;
mod error;
mod keepalive;
mod listener;
mod mutate;
mod reload;
mod review;
mod schemas;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use error::ApiError;
pub use schemas::SchemaStore;
pub use tls::{CertStore, TlsError};

use crate::client::ConnectError;
use crate::cluster::certs::{CertError, SelfManaged, SelfManagedConfig};
use crate::cluster::{Cluster, ClusterConfig};
use crate::metrics::Metrics;
use crate::policy::Settings;
use crate::policy::schema::SchemaError;

/// Limits that keep one client from hurting the others.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The API server sends at most 3 MiB; anything larger is refused with 413.
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    /// Time to read the body and get an evaluation slot; well under the API server's timeout.
    pub review_timeout: Duration,
    /// Time a client has to send its request headers, from the request's first byte (a new
    /// connection: from its TLS handshake).
    pub header_read_timeout: Duration,
    /// How long an HTTP/1.1 connection may wait for its next request. Longer than the API
    /// server keeps an idle connection (90 s), so that the client, never the server, closes it.
    pub idle_timeout: Duration,
    pub max_concurrent_reviews: usize,
    /// After SIGTERM: how long to keep serving while not ready, so endpoints can update.
    pub drain_delay: Duration,
    /// After the drain delay: how long in-flight requests get before connections are closed.
    pub shutdown_grace: Duration,
    /// Safety-net re-read of certificates and schemas.
    pub reload_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 3 * 1024 * 1024,
            max_json_depth: 100,
            review_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            max_concurrent_reviews: 64,
            drain_delay: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(20),
            reload_interval: Duration::from_secs(60),
        }
    }
}

/// Everything `serve` needs, already parsed.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// When set, only clients with a certificate from this CA (the API server) are served.
    pub client_ca: Option<PathBuf>,
    pub schemas: PathBuf,
    pub settings: Settings,
    pub limits: Limits,
    /// Connect to the Kubernetes API for config checksums, rollouts and the delete guard.
    pub cluster: Option<ClusterConfig>,
    /// Keep a self-made CA and serving certificate (written to `tls_cert`/`tls_key`).
    pub self_managed: Option<SelfManagedConfig>,
}

/// Why the server did not start. Each message names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--tls-cert/--tls-key: {0}")]
    Tls(#[from] TlsError),
    #[error("--client-ca: {0}")]
    ClientCa(String),
    #[error("--schemas: {0}")]
    Schemas(#[from] SchemaError),
    #[error(transparent)]
    Cluster(#[from] ConnectError),
    #[error("--self-managed-certs: {0}")]
    SelfManaged(#[from] CertError),
    #[error("--{flag}: cannot listen on {addr}: {source}")]
    Bind {
        flag: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Readiness: certificates loaded and schemas compiled (both before binding), the config cache
/// synced (when connected to a cluster), and not draining.
#[derive(Default)]
pub struct Readiness {
    draining: AtomicBool,
}

impl Readiness {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst)
    }
}

/// State shared by every request.
pub struct AppState {
    pub settings: Settings,
    pub schemas: Arc<SchemaStore>,
    pub certs: Arc<CertStore>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub limits: Limits,
    pub cluster: Option<Arc<Cluster>>,
    evaluations: Semaphore,
}

/// The TLS port's routes: the admission endpoints.
pub fn admission_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/validate", post(review::validate))
        .route("/mutate", post(review::mutate))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
}

/// The plain-HTTP port's routes: health and metrics.
pub fn ops_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    review::refuse(&state, ApiError::NotFound { path: uri.path().to_owned() })
}

async fn method_not_allowed(State(state): State<Arc<AppState>>, method: Method) -> Response {
    review::refuse(&state, ApiError::MethodNotAllowed { method: method.to_string() })
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if !state.readiness.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else if state.cluster.as_ref().is_some_and(|c| !c.is_synced()) {
        (StatusCode::SERVICE_UNAVAILABLE, "syncing the config cache").into_response()
    } else {
        (StatusCode::OK, "ok").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.encode()).into_response()
}

/// A started server.
pub struct Server {
    pub tls_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub state: Arc<AppState>,
    stopping: listener::Stopping,
    stop_all: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Server {
    /// Loads certificates and schemas, then binds both ports. Nothing binds if anything is wrong.
    pub async fn start(config: ServerConfig) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new());
        // Self-managed certificates are made (or read from their Secret) before anything loads them.
        let self_managed = match config.self_managed {
            Some(self_managed) => {
                let manager = SelfManaged::new(self_managed).await?;
                let bundle = manager.cycle().await?;
                Some((manager, bundle))
            }
            None => None,
        };
        let certs = Arc::new(CertStore::load(config.tls_cert, config.tls_key, Arc::clone(&metrics))?);
        let schemas = Arc::new(SchemaStore::load(config.schemas, Arc::clone(&metrics))?);
        let tls = Arc::new(
            tls::Tls::new(Arc::clone(&certs), config.client_ca).map_err(|e| StartError::ClientCa(e.to_string()))?,
        );
        let bind = |flag, addr| async move {
            TcpListener::bind(addr).await.map_err(|source| StartError::Bind { flag, addr, source })
        };
        let tls_listener = bind("listen", config.listen).await?;
        let ops_listener = bind("metrics-listen", config.metrics_listen).await?;
        let local = |listener: &TcpListener, flag, addr| {
            listener.local_addr().map_err(|source| StartError::Bind { flag, addr, source })
        };
        let tls_addr = local(&tls_listener, "listen", config.listen)?;
        let ops_addr = local(&ops_listener, "metrics-listen", config.metrics_listen)?;
        let limits = config.limits;
        let stopping = listener::Stopping { draining: CancellationToken::new(), stop: CancellationToken::new() };
        let stop_all = CancellationToken::new();
        let cluster = match config.cluster {
            Some(cluster) => Some(
                Cluster::start(
                    cluster,
                    config.settings.clone(),
                    Arc::clone(&schemas),
                    Arc::clone(&metrics),
                    stop_all.clone(),
                )
                .await?,
            ),
            None => None,
        };
        if let Some((manager, bundle)) = self_managed {
            manager.spawn(stop_all.clone(), bundle);
        }
        let state = Arc::new(AppState {
            settings: config.settings,
            schemas,
            certs: Arc::clone(&certs),
            metrics,
            readiness: Readiness::default(),
            evaluations: Semaphore::new(limits.max_concurrent_reviews.max(1)),
            limits: limits.clone(),
            cluster,
        });

        let mut tasks = tokio::task::JoinSet::new();
        let reload_tls = Arc::clone(&tls);
        reload::spawn(
            "certificates",
            tls.watched_dirs(),
            false,
            limits.reload_interval,
            stop_all.clone(),
            Arc::new(move || {
                reload_tls.reload();
            }),
        );
        let reload_state = Arc::clone(&state);
        reload::spawn(
            "schemas",
            vec![state.schemas.dir().clone()],
            true,
            limits.reload_interval,
            stop_all.clone(),
            Arc::new(move || {
                reload_state.schemas.reload();
            }),
        );
        tasks.spawn(listener::serve_tls(
            tls_listener,
            tls,
            admission_router(Arc::clone(&state)),
            limits,
            stopping.clone(),
        ));
        let ops = ops_router(Arc::clone(&state));
        let ops_stop = stop_all.clone();
        tasks.spawn(async move {
            let shutdown = async move { ops_stop.cancelled().await };
            if let Err(error) = axum::serve(ops_listener, ops).with_graceful_shutdown(shutdown).await {
                tracing::error!(%error, "metrics port stopped");
            }
        });
        info!(%tls_addr, %ops_addr, "dx-admission serving");
        Ok(Self { tls_addr, ops_addr, state, stopping, stop_all, tasks })
    }

    /// Drains and stops: not ready at once, keep serving for the drain delay while telling
    /// clients to move off (`Connection: close`, GOAWAY), then stop accepting and give in-flight
    /// requests the grace period.
    pub async fn shutdown(mut self) {
        let limits = &self.state.limits;
        info!(drain_delay = ?limits.drain_delay, grace = ?limits.shutdown_grace, "draining");
        self.state.readiness.start_draining();
        self.stopping.draining.cancel();
        tokio::time::sleep(limits.drain_delay).await;
        self.stopping.stop.cancel();
        // The TLS task returns once its connections closed or the grace period ran out.
        while let Some(result) = self.tasks.join_next().await {
            if self.tasks.len() == 1 {
                self.stop_all.cancel();
            }
            if let Err(error) = result {
                tracing::error!(%error, "server task failed");
            }
        }
        self.stop_all.cancel();
        if let Some(cluster) = &self.state.cluster {
            // Release the rollout Lease so another replica leads at once.
            let _ = tokio::time::timeout(Duration::from_secs(3), cluster.leader.stopped()).await;
        }
        info!("stopped");
    }
}
