//! Command-line interface. Every `serve` flag can also be set by a `DX_ADMISSION_*` variable.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::cluster::ClusterConfig;
use crate::cluster::certs::SelfManagedConfig;
use crate::policy::values;
use crate::server::Limits;

/// Writes a command's output to stdout. A reader that has gone (`| head`) ends the output
/// quietly where `print!` would panic; any other write error is reported on stderr.
pub fn output(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && error.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("error: writing the output: {error}");
    }
}

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
    /// Plan an update before it is applied: what changes, of which category, what rolls, what is refused.
    Plan(PlanArgs),
    /// Report the state of a DX deployment: findings of existing objects, stale config, pods on
    /// old config, stuck rollouts; or what a candidate schema version would deny.
    Report(ReportArgs),
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

/// Go syntax again, in the largest whole unit, so `--help` shows defaults as they are typed.
impl fmt::Display for FlagDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (seconds, nanos) = (self.0.as_secs(), self.0.subsec_nanos());
        match (seconds, nanos) {
            (s, 0) if s >= 3600 && s.is_multiple_of(3600) => write!(f, "{}h", s / 3600),
            (s, 0) => write!(f, "{s}s"),
            _ if self.0.as_nanos().is_multiple_of(1_000_000) => write!(f, "{}ms", self.0.as_millis()),
            _ => write!(f, "{}ns", self.0.as_nanos()),
        }
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("kube").args(["cluster", "self_managed_certs"]).multiple(true)))]
pub struct ServeArgs {
    /// Directory of versioned schemas (index.yaml, one directory per version).
    #[arg(long, env = "DX_ADMISSION_SCHEMAS", default_value = "schemas")]
    pub schemas: PathBuf,
    /// Optional YAML policy file: selector labels, severities, modes, storage paths.
    #[arg(long, env = "DX_ADMISSION_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub limits: LimitsArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub self_managed: SelfManagedArgs,
}

/// Where the server listens and with which certificates.
#[derive(Debug, Args)]
#[command(next_help_heading = "TLS and ports")]
pub struct TlsArgs {
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
    /// Re-read with the serving pair.
    #[arg(long, env = "DX_ADMISSION_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Development mode: generate (or reuse) a dev CA and serving certificate in --dev-cert-dir,
    /// bind to loopback, and print the caBundle and webhook configurations to apply.
    #[arg(long, env = "DX_ADMISSION_DEV")]
    pub dev: bool,
    /// Where --dev keeps its certificates (and, with --cluster, its checksum key).
    #[arg(long, env = "DX_ADMISSION_DEV_CERT_DIR", default_value = "certs/dev", requires = "dev")]
    pub dev_cert_dir: PathBuf,
}

/// What `--dev` or the flags decide: the ports and the serving pair's files.
pub struct Endpoints {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// The dev CA, to print the webhook configurations with.
    pub dev_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The ports (loopback with `--dev`) and the pair (the dev pair unless given).
    pub fn endpoints(&self) -> anyhow::Result<Endpoints> {
        let host: [u8; 4] = if self.dev { [127, 0, 0, 1] } else { [0, 0, 0, 0] };
        let listen = self.listen.unwrap_or(SocketAddr::from((host, 8443)));
        let metrics_listen = self.metrics_listen.unwrap_or(SocketAddr::from((host, 9090)));
        if self.dev {
            let certs = crate::dev::ensure(&self.dev_cert_dir)?;
            let verb = if certs.generated { "generated" } else { "reused" };
            tracing::info!(dir = %self.dev_cert_dir.display(), "{verb} dev certificates");
            let tls_cert = self.tls_cert.clone().unwrap_or(certs.cert);
            let tls_key = self.tls_key.clone().unwrap_or(certs.key);
            return Ok(Endpoints { listen, metrics_listen, tls_cert, tls_key, dev_ca: Some(certs.ca) });
        }
        // clap requires both without --dev.
        let missing = |flag: &str| anyhow::anyhow!("{flag} must be set (or use --dev)");
        let tls_cert = self.tls_cert.clone().ok_or_else(|| missing("--tls-cert"))?;
        let tls_key = self.tls_key.clone().ok_or_else(|| missing("--tls-key"))?;
        Ok(Endpoints { listen, metrics_listen, tls_cert, tls_key, dev_ca: None })
    }
}

/// Limits that keep one client from hurting the others. The defaults are [`Limits::default`]'s.
#[derive(Debug, Args)]
#[command(next_help_heading = "Limits and timing")]
pub struct LimitsArgs {
    /// Largest accepted request body, in bytes (the API server sends at most 3 MiB).
    #[arg(long, env = "DX_ADMISSION_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Deepest accepted JSON nesting.
    #[arg(long, env = "DX_ADMISSION_MAX_JSON_DEPTH", default_value_t = Limits::default().max_json_depth)]
    pub max_json_depth: usize,
    /// Deadline to read a review and start evaluating it; keep it under the webhook's timeoutSeconds.
    #[arg(long, env = "DX_ADMISSION_REVIEW_TIMEOUT", default_value_t = FlagDuration(Limits::default().review_timeout))]
    pub review_timeout: FlagDuration,
    /// Time a client has to send its request headers, from the request's first byte.
    #[arg(long, env = "DX_ADMISSION_HEADER_READ_TIMEOUT", default_value_t = FlagDuration(Limits::default().header_read_timeout))]
    pub header_read_timeout: FlagDuration,
    /// How long an HTTP/1.1 connection may wait for its next request; keep it above the API
    /// server's 90 s so the client closes idle connections, never the server.
    #[arg(long, env = "DX_ADMISSION_IDLE_TIMEOUT", default_value_t = FlagDuration(Limits::default().idle_timeout))]
    pub idle_timeout: FlagDuration,
    /// Reviews evaluated at once; more wait (within the review deadline).
    #[arg(long, env = "DX_ADMISSION_MAX_CONCURRENT_REVIEWS", default_value_t = Limits::default().max_concurrent_reviews)]
    pub max_concurrent_reviews: usize,
    /// On SIGTERM/SIGINT: keep serving, not ready, this long so endpoints can drop the pod.
    #[arg(long, env = "DX_ADMISSION_DRAIN_DELAY", default_value_t = FlagDuration(Limits::default().drain_delay))]
    pub drain_delay: FlagDuration,
    /// Then give in-flight requests this long before closing connections.
    #[arg(long, env = "DX_ADMISSION_SHUTDOWN_GRACE", default_value_t = FlagDuration(Limits::default().shutdown_grace))]
    pub shutdown_grace: FlagDuration,
    /// Periodic re-read of certificates and schemas, besides watching their directories.
    #[arg(long, env = "DX_ADMISSION_RELOAD_INTERVAL", default_value_t = FlagDuration(Limits::default().reload_interval))]
    pub reload_interval: FlagDuration,
}

impl From<&LimitsArgs> for Limits {
    fn from(args: &LimitsArgs) -> Self {
        Self {
            max_body_bytes: args.max_body_bytes,
            max_json_depth: args.max_json_depth,
            review_timeout: args.review_timeout.0,
            header_read_timeout: args.header_read_timeout.0,
            idle_timeout: args.idle_timeout.0,
            max_concurrent_reviews: args.max_concurrent_reviews,
            drain_delay: args.drain_delay.0,
            shutdown_grace: args.shutdown_grace.0,
            reload_interval: args.reload_interval.0,
        }
    }
}

/// How to reach the Kubernetes API: used by --cluster and by --self-managed-certs, refused
/// without either.
#[derive(Debug, Args)]
#[command(next_help_heading = "Kubernetes API (with --cluster or --self-managed-certs)")]
pub struct KubeArgs {
    /// Kubeconfig file [default: in-cluster service account, else $KUBECONFIG].
    #[arg(long, env = "DX_ADMISSION_KUBECONFIG", requires = "kube")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace dx-admission runs in: where its Lease and self-managed certificate Secret
    /// live (the chart sets the pod's namespace).
    #[arg(long, env = "DX_ADMISSION_NAMESPACE", default_value = "default", requires = "kube")]
    pub namespace: String,
}

/// Config checksums on /mutate, the rollout controller and the cluster facts rules read.
#[derive(Debug, Args)]
#[command(next_help_heading = "Cluster (--cluster)")]
pub struct ClusterArgs {
    /// Connect to the Kubernetes API for config checksums on /mutate, the rollout controller and
    /// the rules that read the cluster (config-in-use).
    #[arg(long, env = "DX_ADMISSION_CLUSTER")]
    pub cluster: bool,
    /// Key for Secret checksums (HMAC-SHA256), shared by every replica; at least 16 bytes.
    /// Required with --cluster; --dev generates one in --dev-cert-dir.
    #[arg(long, env = "DX_ADMISSION_CHECKSUM_KEY_FILE", requires = "cluster")]
    pub checksum_key_file: Option<PathBuf>,
    /// Config changes arriving within this window roll each workload once.
    #[arg(long, env = "DX_ADMISSION_ROLLOUT_DEBOUNCE", default_value = "2s", requires = "cluster")]
    pub rollout_debounce: FlagDuration,
    /// At most this many workload re-stamps per second.
    #[arg(long, env = "DX_ADMISSION_ROLLOUT_MAX_PATCHES_PER_SECOND", default_value_t = 5, requires = "cluster")]
    pub rollout_max_patches_per_second: u32,
    /// The coordination.k8s.io Lease (in --namespace) that picks the one replica that rolls
    /// workloads; replicas of one installation share it.
    #[arg(long, env = "DX_ADMISSION_LEASE_NAME", default_value = "dx-admission-rollout", requires = "cluster")]
    pub lease_name: String,
    /// This replica's name in the Lease [default: $HOSTNAME, else dx-admission].
    #[arg(long, env = "DX_ADMISSION_IDENTITY", requires = "cluster")]
    pub identity: Option<String>,
    /// Time a direct read of a ConfigMap or Secret missing from the cache may take.
    #[arg(long, env = "DX_ADMISSION_FETCH_TIMEOUT", default_value = "1s", requires = "cluster")]
    pub fetch_timeout: FlagDuration,
    /// How often the Lease holder judges every existing DX object again and writes PolicyReports
    /// (also on taking the Lease and when the schema set changes).
    #[arg(long, env = "DX_ADMISSION_REPORT_INTERVAL", default_value = "10m", requires = "cluster")]
    pub report_interval: FlagDuration,
    /// An updated pod not Ready for longer than this makes its workload's rollout stuck.
    #[arg(long, env = "DX_ADMISSION_ROLLOUT_STUCK_AFTER", default_value = "10m", requires = "cluster")]
    pub rollout_stuck_after: FlagDuration,
}

impl ClusterArgs {
    /// `None` without `--cluster`. With `--dev` and no key file, the dev key in `dev_cert_dir`.
    pub fn config(&self, kube: &KubeArgs, dev_cert_dir: Option<&Path>) -> anyhow::Result<Option<ClusterConfig>> {
        if !self.cluster {
            return Ok(None);
        }
        let checksum_key = match (&self.checksum_key_file, dev_cert_dir) {
            (Some(path), _) => crate::checksum::digest::read_key_file(path).map_err(|e| anyhow::anyhow!(e))?,
            (None, Some(dir)) => crate::dev::ensure_checksum_key(dir)?,
            (None, None) => {
                anyhow::bail!("--checksum-key-file must be set with --cluster (a key shared by every replica)")
            }
        };
        let identity =
            self.identity.clone().or_else(|| std::env::var("HOSTNAME").ok()).unwrap_or_else(|| "dx-admission".into());
        Ok(Some(ClusterConfig {
            kubeconfig: kube.kubeconfig.clone(),
            checksum_key,
            debounce: self.rollout_debounce.0,
            max_patches_per_second: self.rollout_max_patches_per_second,
            lease_namespace: kube.namespace.clone(),
            lease_name: self.lease_name.clone(),
            identity,
            fetch_timeout: self.fetch_timeout.0,
            report_interval: self.report_interval.0,
            rollout_stuck_after: self.rollout_stuck_after.0,
        }))
    }
}

/// Certificates dx-admission makes and rotates itself, for clusters without cert-manager.
#[derive(Debug, Args)]
#[command(next_help_heading = "Self-managed certificates (--self-managed-certs)")]
pub struct SelfManagedArgs {
    /// Keep a self-made CA and serving certificate in --cert-secret (for clusters without
    /// cert-manager), write the pair to --tls-cert/--tls-key, and keep the caBundle of
    /// --webhook-configurations current.
    #[arg(long, env = "DX_ADMISSION_SELF_MANAGED_CERTS", requires_all = ["tls_cert", "tls_key", "cert_dns_names"])]
    pub self_managed_certs: bool,
    /// The Secret (in --namespace) holding the CA and the serving pair, shared by every replica.
    #[arg(long, env = "DX_ADMISSION_CERT_SECRET", default_value = "dx-admission-tls", requires = "self_managed_certs")]
    pub cert_secret: String,
    /// Name of the Validating- and MutatingWebhookConfiguration whose caBundle is kept current.
    #[arg(
        long,
        env = "DX_ADMISSION_WEBHOOK_CONFIGURATIONS",
        default_value = "dx-admission",
        requires = "self_managed_certs"
    )]
    pub webhook_configurations: String,
    /// DNS names of the serving certificate, comma-separated (the webhook Service's names).
    #[arg(long, env = "DX_ADMISSION_CERT_DNS_NAMES", value_delimiter = ',', requires = "self_managed_certs")]
    pub cert_dns_names: Vec<String>,
    /// Lifetime of a self-made CA; it is rolled (both CAs trusted meanwhile) before it ends.
    #[arg(
        long,
        env = "DX_ADMISSION_SELF_MANAGED_CA_VALIDITY",
        default_value = "8760h",
        requires = "self_managed_certs"
    )]
    pub self_managed_ca_validity: FlagDuration,
    /// Lifetime of a serving certificate issued by the self-made CA.
    #[arg(
        long,
        env = "DX_ADMISSION_SELF_MANAGED_CERT_VALIDITY",
        default_value = "2160h",
        requires = "self_managed_certs"
    )]
    pub self_managed_cert_validity: FlagDuration,
    /// Renew the serving certificate when less than this is left (checks run every quarter of it).
    #[arg(
        long,
        env = "DX_ADMISSION_SELF_MANAGED_RENEW_BEFORE",
        default_value = "720h",
        requires = "self_managed_certs"
    )]
    pub self_managed_renew_before: FlagDuration,
}

impl SelfManagedArgs {
    /// `None` without `--self-managed-certs`; the pair is written to `endpoints`' files.
    pub fn config(&self, kube: &KubeArgs, endpoints: &Endpoints) -> Option<SelfManagedConfig> {
        self.self_managed_certs.then(|| SelfManagedConfig {
            kubeconfig: kube.kubeconfig.clone(),
            namespace: kube.namespace.clone(),
            secret: self.cert_secret.clone(),
            webhook_configurations: self.webhook_configurations.clone(),
            dns_names: self.cert_dns_names.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect(),
            ca_validity: self.self_managed_ca_validity.0,
            cert_validity: self.self_managed_cert_validity.0,
            renew_before: self.self_managed_renew_before.0,
            cert_path: endpoints.tls_cert.clone(),
            key_path: endpoints.tls_key.clone(),
        })
    }
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

impl From<&CheckArgs> for crate::check::Options {
    fn from(args: &CheckArgs) -> Self {
        use crate::check::Format;
        Self {
            files: args.files.clone(),
            old: args.old.clone(),
            schemas: args.schemas.clone(),
            namespace: args.namespace.clone(),
            format: match args.output {
                OutputFormat::Text => Format::Text,
                OutputFormat::Json => Format::Json,
                OutputFormat::Junit => Format::Junit,
                OutputFormat::Sarif => Format::Sarif,
            },
        }
    }
}

impl From<&PostRenderArgs> for crate::check::PostRenderOptions {
    fn from(args: &PostRenderArgs) -> Self {
        Self { schemas: args.schemas.clone(), namespace: args.namespace.clone() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The update's manifests: files, directories (*.yaml, *.yml, *.json), or - for stdin (helm template ... | dx-admission plan -f - --cluster).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// The previous manifests.
    #[arg(long, required_unless_present = "cluster", conflicts_with = "cluster")]
    pub old: Vec<PathBuf>,
    /// Read the previous state from the API server (list calls only).
    #[arg(long)]
    pub cluster: bool,
    /// kubeconfig for --cluster; without it, in-cluster, else $KUBECONFIG.
    #[arg(long, requires = "cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// The Helm release the update belongs to: only its objects are removed (R) when the update no longer has them.
    #[arg(long)]
    pub release: Option<String>,
    /// Namespace for objects that name none, and of the release.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Directory of versioned schemas.
    #[arg(long, env = "DX_ADMISSION_SCHEMAS", default_value = "schemas")]
    pub schemas: PathBuf,
    /// Optional YAML policy file, as for serve.
    #[arg(long, env = "DX_ADMISSION_CONFIG")]
    pub config: Option<PathBuf>,
    /// The replicas' HMAC key for Secret checksums: the Secret checksums live pods carry are compared too.
    #[arg(long)]
    pub checksum_key_file: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value_t = PlanFormat::Text)]
    pub output: PlanFormat,
}

impl From<&PlanArgs> for crate::plan::Options {
    fn from(args: &PlanArgs) -> Self {
        use crate::plan::{Format, PreviousFrom};
        Self {
            files: args.files.clone(),
            previous: if args.cluster {
                PreviousFrom::Cluster { kubeconfig: args.kubeconfig.clone() }
            } else {
                PreviousFrom::Old(args.old.clone())
            },
            release: args.release.clone(),
            schemas: args.schemas.clone(),
            namespace: args.namespace.clone(),
            checksum_key_file: args.checksum_key_file.clone(),
            format: match args.output {
                PlanFormat::Text => Format::Text,
                PlanFormat::Json => Format::Json,
                PlanFormat::Markdown => Format::Markdown,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("from").required(true).args(["cluster", "files"])))]
pub struct ReportArgs {
    /// Read the deployment from the API server (list and get calls only).
    #[arg(long)]
    pub cluster: bool,
    /// Report on manifests instead: files, directories (*.yaml, *.yml, *.json), or - for stdin.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// kubeconfig for --cluster; without it, in-cluster, else $KUBECONFIG.
    #[arg(long, requires = "cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Only this namespace [default: all namespaces with --cluster; `default` for manifests that name none].
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Judge every object under this schema version (a candidate before it becomes the default).
    #[arg(long)]
    pub schema_version: Option<String>,
    /// Directory of versioned schemas.
    #[arg(long, env = "DX_ADMISSION_SCHEMAS", default_value = "schemas")]
    pub schemas: PathBuf,
    /// Optional YAML policy file, as for serve.
    #[arg(long, env = "DX_ADMISSION_CONFIG")]
    pub config: Option<PathBuf>,
    /// The replicas' HMAC key: the Secret checksums pod templates carry are compared too.
    #[arg(long, requires = "cluster")]
    pub checksum_key_file: Option<PathBuf>,
    /// An updated pod not Ready for longer than this makes its rollout stuck.
    #[arg(long, default_value = "10m")]
    pub rollout_stuck_after: FlagDuration,
    #[arg(short = 'o', long, value_enum, default_value_t = ReportFormat::Text)]
    pub output: ReportFormat,
}

impl From<&ReportArgs> for crate::report::Options {
    fn from(args: &ReportArgs) -> Self {
        use crate::report::{Format, ReportFrom};
        Self {
            from: if args.cluster {
                ReportFrom::Cluster { kubeconfig: args.kubeconfig.clone() }
            } else {
                ReportFrom::Files(args.files.clone())
            },
            namespace: args.namespace.clone(),
            schema_version: args.schema_version.clone(),
            schemas: args.schemas.clone(),
            checksum_key_file: args.checksum_key_file.clone(),
            stuck_after: args.rollout_stuck_after.0,
            format: match args.output {
                ReportFormat::Text => Format::Text,
                ReportFormat::Json => Format::Json,
            },
        }
    }
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

#[cfg(test)]
mod tests {
    use super::FlagDuration;

    #[test]
    fn durations_print_as_they_are_typed_and_parse_back() {
        for (typed, shown) in [("5s", "5s"), ("60s", "60s"), ("1m30s", "90s"), ("720h", "720h"), ("250ms", "250ms")] {
            let parsed: FlagDuration = typed.parse().unwrap();
            assert_eq!(parsed.to_string(), shown);
            assert_eq!(shown.parse::<FlagDuration>().unwrap(), parsed);
        }
    }
}
