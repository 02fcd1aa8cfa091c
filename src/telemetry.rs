//! Structured logs: JSON by default (one object per line, span fields included), text for people.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. Logs go to stderr so `check` output stays clean on stdout.
///
/// Lines are formatted on the thread that logs and written by a thread of their own, which
/// batches them under load (a write per review line cost an eighth of the throughput): it
/// buffers what is queued and writes it at once each time the queue runs empty, so no line
/// waits while the server is idle. When its queue is full, loggers wait rather than drop lines.
/// Keep the guard until exit: dropping it flushes what is queued.
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<WorkerGuard> {
    let filter = EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("--log {filter:?}: {e}"))?;
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        // The writer thread flushes this buffer whenever its queue runs empty.
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let result = match format {
        LogFormat::Json => json_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        // Colours only for a terminal: piped into a file or a log collector they are noise.
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("logging: {e}"))?;
    Ok(guard)
}
