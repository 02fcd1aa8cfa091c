//! The `dx-admission` binary: parses flags, sets up logging, and runs a command.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use dx_admission::cli::{Cli, Command, RulesFormat, SchemaCommand, ServeArgs};
use dx_admission::cluster::ClusterConfig;
use dx_admission::cluster::certs::SelfManagedConfig;
use dx_admission::policy::Settings;
use dx_admission::server::{Limits, Server, ServerConfig};
use dx_admission::{catalogue, check, dev, telemetry};

/// Reviews allocate many small, short-lived objects on every worker thread at once; the system
/// allocators spent a quarter of the CPU per review on them (see benches/load.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Rules(args) => {
            print!("{}", if args.format == RulesFormat::Markdown { catalogue::markdown() } else { catalogue::text() });
            ExitCode::SUCCESS
        }
        Command::Schema(command) => schema(command),
        Command::PostRender(args) => match load_settings(args.config.as_deref()) {
            Ok(settings) => ExitCode::from(check::post_render(&args, &settings) as u8),
            Err(error) => {
                eprintln!("dx-admission: {error:#}");
                ExitCode::from(check::EXIT_INPUT as u8)
            }
        },
        Command::Check(args) => match load_settings(args.config.as_deref()) {
            Ok(settings) => ExitCode::from(check::run(&args, &settings) as u8),
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(check::EXIT_INPUT as u8)
            }
        },
        Command::Serve(args) => {
            let _log_writer = match telemetry::init(cli.log_format, &cli.log) {
                Ok(guard) => guard,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("error: cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "dx-admission did not start");
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `dx-admission schema ...`: exit 0 when clean, 1 on findings (errors, failed cases, breaking
/// changes), 2 when the input cannot be read.
fn schema(command: SchemaCommand) -> ExitCode {
    use dx_admission::authoring::{diff, lint, suite};
    match command {
        SchemaCommand::Lint { dir } => {
            let messages = lint::lint(&dir);
            for message in &messages {
                println!("{message}");
            }
            let errors = messages.iter().filter(|m| m.level == lint::Level::Error).count();
            println!("{}: {errors} errors, {} warnings", dir.display(), messages.len() - errors);
            ExitCode::from(u8::from(errors > 0))
        }
        SchemaCommand::Test { dir, junit, config } => {
            let settings = match load_settings(config.as_deref()) {
                Ok(settings) => settings,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    return ExitCode::from(2);
                }
            };
            let outcomes = match suite::run(&dir, &settings) {
                Ok(outcomes) => outcomes,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            };
            print!("{}", suite::render(&outcomes));
            if let Some(path) = junit
                && let Err(error) = std::fs::write(&path, suite::render_junit(&outcomes))
            {
                eprintln!("error: --junit {}: {error}", path.display());
                return ExitCode::from(2);
            }
            ExitCode::from(u8::from(outcomes.iter().any(|o| o.failure.is_some())))
        }
        SchemaCommand::Diff { old, new, schemas } => match diff::diff(&schemas, &old, &new) {
            Ok(changes) => {
                print!("{}", diff::render(&old, &new, &changes));
                ExitCode::from(u8::from(changes.iter().any(|c| c.class == diff::Class::Breaking)))
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
    }
}

/// Reads the policy file, refusing unknown fields and unknown rule ids.
fn load_settings(path: Option<&Path>) -> anyhow::Result<Settings> {
    let Some(path) = path else { return Ok(Settings::default()) };
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
    let settings: Settings =
        serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
    let known = catalogue::rule_ids();
    let unknown = settings.unknown_rule_ids(&known);
    if !unknown.is_empty() {
        anyhow::bail!(
            "--config {}: unknown rule ids: {} (see `dx-admission rules`)",
            path.display(),
            unknown.join(", ")
        );
    }
    Ok(settings)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let settings = load_settings(args.config.as_deref())?;
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let any = |port| std::net::SocketAddr::from(([0, 0, 0, 0], port));
    let (tls_cert, tls_key, ca) = if args.dev {
        let certs = dev::ensure(&args.dev_cert_dir)?;
        let verb = if certs.generated { "generated" } else { "reused" };
        tracing::info!(dir = %args.dev_cert_dir.display(), "{verb} dev certificates");
        (args.tls_cert.unwrap_or(certs.cert), args.tls_key.unwrap_or(certs.key), Some(certs.ca))
    } else {
        // clap enforces both flags without --dev.
        let missing = |flag: &str| anyhow::anyhow!("{flag} must be set (or use --dev)");
        (args.tls_cert.ok_or_else(|| missing("--tls-cert"))?, args.tls_key.ok_or_else(|| missing("--tls-key"))?, None)
    };
    let cluster = if args.cluster {
        let key = match (&args.checksum_key_file, args.dev) {
            (Some(path), _) => read_checksum_key(path)?,
            (None, true) => dev::ensure_checksum_key(&args.dev_cert_dir)?,
            (None, false) => {
                anyhow::bail!("--checksum-key-file must be set with --cluster (a key shared by every replica)")
            }
        };
        let identity =
            args.identity.clone().or_else(|| std::env::var("HOSTNAME").ok()).unwrap_or_else(|| "dx-admission".into());
        Some(ClusterConfig {
            kubeconfig: args.kubeconfig.clone(),
            checksum_key: key,
            debounce: args.rollout_debounce.0,
            max_patches_per_second: args.rollout_max_patches_per_second,
            lease_namespace: args.namespace.clone(),
            lease_name: args.lease_name.clone(),
            identity,
            fetch_timeout: args.fetch_timeout.0,
        })
    } else {
        None
    };
    let self_managed = args.self_managed_certs.then(|| SelfManagedConfig {
        kubeconfig: args.kubeconfig.clone(),
        namespace: args.namespace.clone(),
        secret: args.cert_secret.clone(),
        webhook_configurations: args.webhook_configurations.clone(),
        dns_names: args.cert_dns_names.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect(),
        ca_validity: args.self_managed_ca_validity.0,
        cert_validity: args.self_managed_cert_validity.0,
        renew_before: args.self_managed_renew_before.0,
        cert_path: tls_cert.clone(),
        key_path: tls_key.clone(),
    });
    let config = ServerConfig {
        listen: args.listen.unwrap_or(if args.dev { loopback(8443) } else { any(8443) }),
        metrics_listen: args.metrics_listen.unwrap_or(if args.dev { loopback(9090) } else { any(9090) }),
        tls_cert,
        tls_key,
        client_ca: args.client_ca.clone(),
        schemas: args.schemas,
        settings,
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_json_depth: args.max_json_depth,
            review_timeout: args.review_timeout.0,
            header_read_timeout: args.header_read_timeout.0,
            max_concurrent_reviews: args.max_concurrent_reviews,
            drain_delay: args.drain_delay.0,
            shutdown_grace: args.shutdown_grace.0,
            reload_interval: args.reload_interval.0,
        },
        cluster,
        self_managed,
    };
    let server = Server::start(config).await?;
    tracing::info!(startup_ms = started.elapsed().as_secs_f64() * 1000.0, "ready");
    if let Some(ca) = ca {
        let ca_pem = std::fs::read(&ca)?;
        println!(
            "# dx-admission dev mode: TLS on https://{}, health and metrics on http://{}",
            server.tls_addr, server.ops_addr
        );
        println!(
            "# CA: {} — try: curl --cacert {} -H 'Content-Type: application/json' -d @tests/fixtures/admission-reviews/configmap-create-allowed.json https://{}/validate",
            ca.display(),
            ca.display(),
            server.tls_addr
        );
        println!("# Webhook configurations for a cluster that can reach this address (kubectl apply -f -):");
        print!("{}", dev::webhook_configurations(&format!("https://{}", server.tls_addr), &ca_pem));
    }
    shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}

/// Reads the shared HMAC key for Secret checksums.
fn read_checksum_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let key = std::fs::read(path).map_err(|e| anyhow::anyhow!("--checksum-key-file {}: {e}", path.display()))?;
    let key = key.trim_ascii().to_vec();
    if key.len() < 16 {
        anyhow::bail!("--checksum-key-file {}: the key has {} bytes; use at least 16", path.display(), key.len());
    }
    Ok(key)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
