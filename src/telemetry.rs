//! Structured logs: JSON by default (one object per line, span fields included), text for people.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogFormat;

/// How long the writer thread lets lines gather before it writes them.
const LINGER: Duration = Duration::from_millis(100);
/// Queued bytes beyond which loggers wait for the writer thread rather than drop lines.
const MAX_QUEUED: usize = 8 << 20;

/// Installs the global subscriber. Logs go to stderr so `check` output stays clean on stdout.
/// Keep the returned guard until exit: dropping it writes what is queued.
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<LogWriter> {
    let filter = EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("--log {filter:?}: {e}"))?;
    let (writer, guard) = LogWriter::start(std::io::stderr())?;
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

/// Lines are formatted on the thread that logs and written by a thread of their own, in batches:
/// the first line after a quiet spell wakes it, it waits [`LINGER`] for more, then writes them all
/// at once. A wake-up and a write per line cost a quarter of a review's CPU at fifty reviews a
/// second, and an eighth of the throughput under load. Nothing runs while no line comes.
pub struct LogWriter {
    shared: Arc<Queue>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Queue {
    state: Mutex<Pending>,
    /// Signalled when the first line lands in an empty queue, and on close.
    arrived: Condvar,
    /// Signalled when the writer thread takes a batch.
    taken: Condvar,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

impl Queue {
    /// A poisoned lock only means a logger panicked mid-line: the bytes are still worth writing.
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, line: &[u8]) {
        let mut pending = self.lock();
        while pending.bytes.len() > MAX_QUEUED && !pending.closed {
            pending = self.taken.wait(pending).unwrap_or_else(PoisonError::into_inner);
        }
        let first = pending.bytes.is_empty();
        pending.bytes.extend_from_slice(line);
        drop(pending);
        if first {
            self.arrived.notify_one();
        }
    }

    /// The writer thread: waits for a line, lets more gather, writes the batch; returns once
    /// closed and empty.
    fn drain(&self, mut out: impl Write) {
        let mut batch = Vec::new();
        loop {
            let mut pending = self.lock();
            while pending.bytes.is_empty() && !pending.closed {
                pending = self.arrived.wait(pending).unwrap_or_else(PoisonError::into_inner);
            }
            if pending.bytes.is_empty() {
                return;
            }
            if !pending.closed {
                drop(pending);
                std::thread::sleep(LINGER);
                pending = self.lock();
            }
            std::mem::swap(&mut batch, &mut pending.bytes);
            drop(pending);
            self.taken.notify_all();
            // Nowhere to report a failed write of the log itself.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
        }
    }
}

impl LogWriter {
    /// Starts the writer thread over `out`; the [`Line`]s go to it.
    fn start(out: impl Write + Send + 'static) -> anyhow::Result<(Lines, Self)> {
        let shared = Arc::new(Queue::default());
        let queue = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || queue.drain(out))
            .map_err(|e| anyhow::anyhow!("logging: cannot start the log writer thread: {e}"))?;
        Ok((Lines(Arc::clone(&shared)), Self { shared, thread: Some(thread) }))
    }
}

impl Drop for LogWriter {
    /// Writes what is queued, at once, and stops the thread.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.arrived.notify_one();
        self.shared.taken.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the subscriber writes each line through.
#[derive(Clone)]
struct Lines(Arc<Queue>);

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line { queue: &self.0, bytes: Vec::new() }
    }
}

/// One line, queued whole when the formatter is done with it.
struct Line<'a> {
    queue: &'a Queue,
    bytes: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            self.queue.push(&self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test reads back, and a count of the writes it took.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut sink = self.0.lock().unwrap();
            sink.0.extend_from_slice(buf);
            sink.1 += 1;
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_written_together_come_out_whole_in_order_in_few_writes_and_all_by_the_guards_drop() {
        let sink = Sink::default();
        let (lines, guard) = LogWriter::start(sink.clone()).unwrap();
        for n in 0..1000 {
            let mut line = lines.make_writer();
            write!(line, "line {n:04}").unwrap();
            line.write_all(b"\n").unwrap();
        }
        drop(guard);
        let (bytes, writes) = sink.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let expected: String = (0..1000).map(|n| format!("line {n:04}\n")).collect();
        assert_eq!(text, expected);
        // Batched: one write per linger (or at close), not one per line.
        assert!(writes < 10, "{writes} writes for 1000 lines");
    }

    #[test]
    fn lines_arriving_apart_within_the_linger_share_a_write() {
        let sink = Sink::default();
        let (lines, guard) = LogWriter::start(sink.clone()).unwrap();
        // Ten reviews at 200 a second: without the linger each line is a wake-up and a write.
        for n in 0..10 {
            writeln!(lines.make_writer(), "review {n}").unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(guard);
        let (bytes, writes) = sink.0.lock().unwrap().clone();
        assert_eq!(String::from_utf8(bytes).unwrap().lines().count(), 10);
        assert!(writes <= 3, "{writes} writes for 10 lines within 50 ms");
    }

    #[test]
    fn a_line_logged_while_idle_is_written_without_closing() {
        let sink = Sink::default();
        let (lines, _guard) = LogWriter::start(sink.clone()).unwrap();
        lines.make_writer().write_all(b"ready\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.0.lock().unwrap().0.is_empty() {
            assert!(std::time::Instant::now() < deadline, "the line was never written");
            std::thread::yield_now();
        }
        assert_eq!(sink.0.lock().unwrap().0, b"ready\n");
    }

    #[test]
    fn lines_past_the_queue_limit_are_all_written() {
        let sink = Sink::default();
        let (lines, guard) = LogWriter::start(sink.clone()).unwrap();
        let big = vec![b'x'; MAX_QUEUED / 2];
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (lines, big) = (lines.clone(), big.clone());
                std::thread::spawn(move || {
                    for _ in 0..3 {
                        lines.make_writer().write_all(&big).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        assert_eq!(sink.0.lock().unwrap().0.len(), 12 * (MAX_QUEUED / 2));
    }
}
