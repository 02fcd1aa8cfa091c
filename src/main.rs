//! The `dx-admission` binary: parses flags, sets up logging, and runs a command.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use dx_admission::cli::{Cli, Command, RulesFormat, SchemaCommand, ServeArgs, output};
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
            output(&if args.format == RulesFormat::Markdown { catalogue::markdown() } else { catalogue::text() });
            ExitCode::SUCCESS
        }
        Command::Schema(command) => schema(command),
        Command::PostRender(args) => match load_settings(args.config.as_deref()) {
            Ok(settings) => ExitCode::from(check::post_render(&(&args).into(), &settings) as u8),
            Err(error) => {
                eprintln!("dx-admission: {error:#}");
                ExitCode::from(check::EXIT_INPUT as u8)
            }
        },
        Command::Check(args) => match load_settings(args.config.as_deref()) {
            Ok(settings) => ExitCode::from(check::run(&(&args).into(), &settings) as u8),
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(check::EXIT_INPUT as u8)
            }
        },
        Command::Plan(args) => match load_settings(args.config.as_deref()) {
            Ok(settings) => ExitCode::from(dx_admission::plan::run(&(&args).into(), &settings) as u8),
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(dx_admission::plan::EXIT_INPUT as u8)
            }
        },
        Command::Report(args) => match load_settings(args.config.as_deref()) {
            Ok(settings) => ExitCode::from(dx_admission::report::run(&(&args).into(), &settings) as u8),
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
                    // Start-up messages already name their cause; `{:#}` would repeat it.
                    tracing::error!(error = %error, "dx-admission did not start");
                    eprintln!("error: {error}");
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
            let errors = messages.iter().filter(|m| m.level == lint::Level::Error).count();
            let mut text: String = messages.iter().map(|m| format!("{m}\n")).collect();
            text.push_str(&format!("{}: {errors} errors, {} warnings\n", dir.display(), messages.len() - errors));
            output(&text);
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
            output(&suite::render(&outcomes));
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
                output(&diff::render(&old, &new, &changes));
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
    let endpoints = args.tls.endpoints()?;
    let dev_cert_dir = args.tls.dev.then_some(args.tls.dev_cert_dir.as_path());
    let config = ServerConfig {
        listen: endpoints.listen,
        metrics_listen: endpoints.metrics_listen,
        tls_cert: endpoints.tls_cert.clone(),
        tls_key: endpoints.tls_key.clone(),
        client_ca: args.tls.client_ca.clone(),
        schemas: args.schemas.clone(),
        settings,
        limits: Limits::from(&args.limits),
        cluster: args.cluster.config(&args.kube, dev_cert_dir)?,
        self_managed: args.self_managed.config(&args.kube, &endpoints),
    };
    let ca = endpoints.dev_ca;
    let (selector, with_cluster) = (config.settings.selector.clone(), config.cluster.is_some());
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
        let url = format!("https://{}", server.tls_addr);
        print!("{}", dev::webhook_configurations(&url, &ca_pem, &selector, with_cluster));
        println!("# End of the webhook configurations. Serving until SIGTERM or Ctrl-C.");
    }
    shutdown_signal().await;
    server.shutdown().await;
    Ok(())
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
