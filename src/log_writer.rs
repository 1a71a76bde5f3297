//! Log lines written off the request path. A request formats its access-log line in its own
//! thread and hands it to a bounded queue without a lock or a system call; one writer thread
//! takes every queued line a few times a second and writes them in one `write` to the sink
//! (stderr). When the sink cannot keep up (a stalled pipe, a full disk) and the queue is full,
//! lines are dropped and counted (`authgate_log_lines_dropped_total`), never waited for: a slow
//! log reader must not slow the gateway. What is queued at exit is flushed.
//!
//! By hand rather than `tracing-appender`'s non-blocking writer: that one wakes its thread
//! (a futex call) for every line that finds it idle, and writes each line on its own.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::METRICS;

/// Lines the queue holds: at 40 000 lines per second, several seconds of a stalled sink.
pub const QUEUE_LINES: usize = 131_072;

/// How often the writer thread takes the queued lines.
const INTERVAL: Duration = Duration::from_millis(10);

/// Largest batch written at once.
const BATCH_BYTES: usize = 256 * 1024;

/// The `tracing_subscriber` writer: each line goes to the queue.
#[derive(Clone)]
pub struct LogWriter {
    queue: SyncSender<Vec<u8>>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogWriter")
    }
}

/// Flushes what is queued and stops the writer thread when dropped.
#[derive(Debug)]
pub struct LogFlush {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `sink`, with room for `capacity` lines.
pub fn start<W: Write + Send + 'static>(sink: W, capacity: usize) -> std::io::Result<(LogWriter, LogFlush)> {
    let (queue, lines) = sync_channel(capacity);
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("authgate-log".into())
        .spawn(move || write_lines(lines, sink, &stopping))?;
    Ok((LogWriter { queue }, LogFlush { stop, thread: Some(thread) }))
}

/// The writer thread: every `INTERVAL`, everything queued, in batches.
fn write_lines<W: Write>(lines: Receiver<Vec<u8>>, mut sink: W, stop: &AtomicBool) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    loop {
        // read before draining: a line queued before the flag was set is drained below
        let stopping = stop.load(Ordering::Acquire);
        while let Ok(line) = lines.try_recv() {
            batch.extend_from_slice(&line);
            if batch.len() >= BATCH_BYTES {
                // a sink that fails loses the batch: there is nowhere else to say so
                let _ = sink.write_all(&batch);
                batch.clear();
            }
        }
        if !batch.is_empty() {
            let _ = sink.write_all(&batch);
            let _ = sink.flush();
            batch.clear();
        }
        if stopping {
            return;
        }
        // parked rather than blocked on the queue, so that a line never has to wake this thread
        std::thread::park_timeout(INTERVAL);
    }
}

impl LogWriter {
    fn queue(&self, line: Vec<u8>) {
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => METRICS.log_lines_dropped.inc(),
        }
    }
}

/// One log line being written.
#[derive(Debug)]
pub struct LineWriter<'a> {
    writer: &'a LogWriter,
    line: Vec<u8>,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.line.is_empty() {
            // the usual case: the whole line in one call, taken as it is
            self.line.reserve_exact(buf.len());
        }
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.writer.queue(std::mem::take(&mut self.line));
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { writer: self, line: Vec::new() }
    }
}

impl LogFlush {
    /// Writes what is queued and stops the writer thread, waiting at most `limit` for a sink
    /// that does not take it.
    pub fn finish(mut self, limit: Duration) {
        self.stop.store(true, Ordering::Release);
        let Some(thread) = self.thread.take() else { return };
        thread.thread().unpark();
        let deadline = std::time::Instant::now() + limit;
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

impl Drop for LogFlush {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let flush = LogFlush { stop: Arc::clone(&self.stop), thread: self.thread.take() };
            flush.finish(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc;

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// A sink that hands what it is given to the test.
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl Write for Collect {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A sink that says when a write begins and takes nothing until the test lets it.
    struct Stalled {
        entered: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
        seen: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.release.recv();
            self.seen.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(w: &LogWriter, text: &str) {
        let mut l = w.make_writer();
        l.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_arrive_whole_in_order_and_are_flushed_at_the_end() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (writer, flush) = start(Collect(Arc::clone(&seen)), 1024).unwrap();
        for i in 0..500 {
            line(&writer, &format!("line {i}\n"));
        }
        // a line written in parts is one line
        let mut l = writer.make_writer();
        l.write_all(b"last ").unwrap();
        l.write_all(b"line\n").unwrap();
        drop(l);
        flush.finish(Duration::from_secs(5));
        let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
        let want: String = (0..500).map(|i| format!("line {i}\n")).collect::<String>() + "last line\n";
        assert_eq!(text, want);
    }

    #[test]
    fn a_stalled_sink_drops_and_counts_lines_without_blocking() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (entered, entering) = mpsc::channel();
        let (release, released) = mpsc::channel();
        let sink = Stalled { entered, release: released, seen: Arc::clone(&seen) };
        let (writer, flush) = start(sink, 16).unwrap();
        // the writer thread takes the first line and stalls writing it
        line(&writer, "first\n");
        entering.recv().unwrap();
        let before = METRICS.log_lines_dropped.get();
        // 10 000 more against the stalled sink: this loop ending is the point (none waited for);
        // 16 fit in the queue, the rest are dropped and counted
        for i in 0..10_000 {
            line(&writer, &format!("line {i}\n"));
        }
        assert_eq!(METRICS.log_lines_dropped.get() - before, 10_000 - 16);
        for _ in 0..10 {
            let _ = release.send(());
        }
        flush.finish(Duration::from_secs(5));
        let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
        let want: String =
            std::iter::once("first\n".to_owned()).chain((0..16).map(|i| format!("line {i}\n"))).collect();
        assert_eq!(text, want, "the queued lines are written, in order");
    }
}
