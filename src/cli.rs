//! Command-line interface. Every `serve` flag can also be set by a `DX_ADMISSION_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::policy::values;

#[derive(Debug, Parser)]
#[command(name = "dx-admission", version, about = "Admission webhook that guards HCL DX deployments")]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Json, env = "DX_ADMISSION_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `dx_admission=debug`.
    #[arg(long, global = true, default_value = "info", env = "DX_ADMISSION_LOG")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhook over TLS.
    Serve(Box<ServeArgs>),
    /// Check manifests offline with the same evaluation the server runs.
    Check(CheckArgs),
    /// Print the rule catalogue.
    Rules(RulesArgs),
    /// A Helm post-renderer: pass clean rendered manifests through, fail the release otherwise.
    PostRender(PostRenderArgs),
    /// Tools for schema authors: lint, test suites, and diffs between versions.
    #[command(subcommand)]
    Schema(SchemaCommand),
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Check a schema directory: compiles, known keywords and formats, descriptions, no orphans.
    Lint {
        /// The schema directory.
        #[arg(default_value = "schemas")]
        dir: PathBuf,
    },
    /// Run the test suites kept beside each version (<dir>/<version>/tests/*.yaml).
    Test {
        #[arg(default_value = "schemas")]
        dir: PathBuf,
        /// Also write a JUnit XML report here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Optional YAML policy file, as for serve.
        #[arg(long, env = "DX_ADMISSION_CONFIG")]
        config: Option<PathBuf>,
    },
    /// What changed from one version to another, classed breaking or compatible (exit 1 if any is breaking).
    Diff {
        /// The version to compare from (a directory under --schemas, e.g. v1).
        old: String,
        /// The version to compare to (e.g. v2).
        new: String,
        /// The schema directory holding both versions.
        #[arg(long, env = "DX_ADMISSION_SCHEMAS", default_value = "schemas")]
        schemas: PathBuf,
    },
}

/// A duration flag in Go syntax (`5s`, `250ms`, `1m30s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagDuration(pub Duration);

impl FromStr for FlagDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parsed: values::Duration = text.parse().map_err(|e| format!("{text:?} {e}"))?;
        let nanos = u64::try_from(parsed.as_nanos()).map_err(|_| format!("{text:?} must not be negative"))?;
        Ok(Self(Duration::from_nanos(nanos)))
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the TLS admission port [default: 0.0.0.0:8443; 127.0.0.1:8443 with --dev].
    #[arg(long, env = "DX_ADMISSION_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the plain-HTTP health and metrics port [default: 0.0.0.0:9090; 127.0.0.1:9090 with --dev].
    #[arg(long, env = "DX_ADMISSION_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain of the serving certificate (required unless --dev).
    #[arg(long, env = "DX_ADMISSION_TLS_CERT", required_unless_present = "dev")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the serving certificate (required unless --dev).
    #[arg(long, env = "DX_ADMISSION_TLS_KEY", required_unless_present = "dev")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: serve only clients presenting a certificate from it (the API server,
    /// configured with a client certificate for webhooks); others fail the TLS handshake.
    #[arg(long, env = "DX_ADMISSION_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Directory of versioned schemas (index.yaml, one directory per version).
    #[arg(long, env = "DX_ADMISSION_SCHEMAS", default_value = "schemas")]
    pub schemas: PathBuf,
    /// Optional YAML policy file: selector labels, severities, modes, storage paths.
    #[arg(long, env = "DX_ADMISSION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Development mode: generate (or reuse) a dev CA and serving certificate in --dev-cert-dir,
    /// bind to loopback, and print the caBundle and webhook configurations to apply.
    #[arg(long, env = "DX_ADMISSION_DEV")]
    pub dev: bool,
    /// Where --dev keeps its certificates.
    #[arg(long, env = "DX_ADMISSION_DEV_CERT_DIR", default_value = "certs/dev")]
    pub dev_cert_dir: PathBuf,
    /// Largest accepted request body, in bytes (the API server sends at most 3 MiB).
    #[arg(long, env = "DX_ADMISSION_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Deepest accepted JSON nesting.
    #[arg(long, env = "DX_ADMISSION_MAX_JSON_DEPTH", default_value_t = 100)]
    pub max_json_depth: usize,
    /// Deadline to read a review and start evaluating it; keep it under the webhook's timeoutSeconds.
    #[arg(long, env = "DX_ADMISSION_REVIEW_TIMEOUT", default_value = "5s")]
    pub review_timeout: FlagDuration,
    /// Time a client has to send its request headers.
    #[arg(long, env = "DX_ADMISSION_HEADER_READ_TIMEOUT", default_value = "5s")]
    pub header_read_timeout: FlagDuration,
    /// Reviews evaluated at once; more wait (within the review deadline).
    #[arg(long, env = "DX_ADMISSION_MAX_CONCURRENT_REVIEWS", default_value_t = 64)]
    pub max_concurrent_reviews: usize,
    /// On SIGTERM/SIGINT: keep serving, not ready, this long so endpoints can drop the pod.
    #[arg(long, env = "DX_ADMISSION_DRAIN_DELAY", default_value = "5s")]
    pub drain_delay: FlagDuration,
    /// Then give in-flight requests this long before closing connections.
    #[arg(long, env = "DX_ADMISSION_SHUTDOWN_GRACE", default_value = "20s")]
    pub shutdown_grace: FlagDuration,
    /// Periodic re-read of certificates and schemas, besides watching their directories.
    #[arg(long, env = "DX_ADMISSION_RELOAD_INTERVAL", default_value = "60s")]
    pub reload_interval: FlagDuration,
    /// Connect to the Kubernetes API (in-cluster, $KUBECONFIG, or --kubeconfig) for config
    /// checksums on /mutate, the rollout controller and the delete guard.
    #[arg(long, env = "DX_ADMISSION_CLUSTER")]
    pub cluster: bool,
    /// Kubeconfig file for --cluster (default: in-cluster service account, else $KUBECONFIG).
    #[arg(long, env = "DX_ADMISSION_KUBECONFIG", requires = "cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Key for Secret checksums (HMAC-SHA256), shared by every replica; at least 16 bytes.
    /// Required with --cluster; --dev generates one in --dev-cert-dir.
    #[arg(long, env = "DX_ADMISSION_CHECKSUM_KEY_FILE")]
    pub checksum_key_file: Option<PathBuf>,
    /// Config changes arriving within this window roll each workload once.
    #[arg(long, env = "DX_ADMISSION_ROLLOUT_DEBOUNCE", default_value = "2s")]
    pub rollout_debounce: FlagDuration,
    /// At most this many workload re-stamps per second.
    #[arg(long, env = "DX_ADMISSION_ROLLOUT_MAX_PATCHES_PER_SECOND", default_value_t = 5)]
    pub rollout_max_patches_per_second: u32,
    /// The namespace dx-admission runs in: where its Lease and self-managed certificate Secret
    /// live (the chart sets the pod's namespace).
    #[arg(long, env = "DX_ADMISSION_NAMESPACE", default_value = "default")]
    pub namespace: String,
    #[arg(long, env = "DX_ADMISSION_LEASE_NAME", default_value = "dx-admission-rollout")]
    pub lease_name: String,
    /// This replica's name in the Lease [default: the host name].
    #[arg(long, env = "DX_ADMISSION_IDENTITY")]
    pub identity: Option<String>,
    /// Time a direct read of a ConfigMap or Secret missing from the cache may take.
    #[arg(long, env = "DX_ADMISSION_FETCH_TIMEOUT", default_value = "1s")]
    pub fetch_timeout: FlagDuration,
    /// Keep a self-made CA and serving certificate in --cert-secret (for clusters without
    /// cert-manager), write the pair to --tls-cert/--tls-key, and keep the caBundle of
    /// --webhook-configurations current.
    #[arg(long, env = "DX_ADMISSION_SELF_MANAGED_CERTS", requires_all = ["tls_cert", "tls_key", "cert_dns_names"])]
    pub self_managed_certs: bool,
    #[arg(long, env = "DX_ADMISSION_CERT_SECRET", default_value = "dx-admission-tls")]
    pub cert_secret: String,
    /// Name of the Validating- and MutatingWebhookConfiguration whose caBundle is kept current.
    #[arg(long, env = "DX_ADMISSION_WEBHOOK_CONFIGURATIONS", default_value = "dx-admission")]
    pub webhook_configurations: String,
    /// DNS names of the serving certificate, comma-separated (the webhook Service's names).
    #[arg(long, env = "DX_ADMISSION_CERT_DNS_NAMES", value_delimiter = ',')]
    pub cert_dns_names: Vec<String>,
    #[arg(long, env = "DX_ADMISSION_SELF_MANAGED_CA_VALIDITY", default_value = "8760h")]
    pub self_managed_ca_validity: FlagDuration,
    #[arg(long, env = "DX_ADMISSION_SELF_MANAGED_CERT_VALIDITY", default_value = "2160h")]
    pub self_managed_cert_validity: FlagDuration,
    /// Renew the serving certificate when less than this is left (checks run every quarter of it).
    #[arg(long, env = "DX_ADMISSION_SELF_MANAGED_RENEW_BEFORE", default_value = "720h")]
    pub self_managed_renew_before: FlagDuration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    /// JUnit XML: a test case per DX object.
    Junit,
    /// SARIF 2.1.0: a result per finding.
    Sarif,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Manifests to check: files, directories (*.yaml, *.yml, *.json), or - for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Previous manifests, to run the UPDATE rules against (matched by kind, namespace, name).
    #[arg(long)]
    pub old: Vec<PathBuf>,
    /// Directory of versioned schemas.
    #[arg(long, env = "DX_ADMISSION_SCHEMAS", default_value = "schemas")]
    pub schemas: PathBuf,
    /// Optional YAML policy file, as for serve.
    #[arg(long, env = "DX_ADMISSION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Namespace for objects that name none (as kubectl would use).
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct PostRenderArgs {
    /// Directory of versioned schemas.
    #[arg(long, env = "DX_ADMISSION_SCHEMAS", default_value = "schemas")]
    pub schemas: PathBuf,
    /// Optional YAML policy file, as for serve.
    #[arg(long, env = "DX_ADMISSION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Namespace of objects that name none (Helm sets HELM_NAMESPACE for plugins).
    #[arg(short = 'n', long, env = "HELM_NAMESPACE", default_value = "default")]
    pub namespace: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RulesFormat {
    Text,
    Markdown,
}

#[derive(Debug, Args)]
pub struct RulesArgs {
    #[arg(long, value_enum, default_value_t = RulesFormat::Text)]
    pub format: RulesFormat,
}
