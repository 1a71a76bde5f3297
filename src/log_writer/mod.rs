//! Log lines written off the request path. A request formats its access-log line in its own
//! thread and hands it to a bounded queue without a lock or a system call; one writer thread
//! takes every queued line every 10 ms and writes them in one `write` to the sink (stderr).
//! When the sink cannot keep up (a stalled pipe, a full disk) and the queue is full (in lines or
//! in bytes), or the sink fails, lines are dropped and counted
//! (`authgate_log_lines_dropped_total`), never waited for: a slow log reader must not slow the
//! gateway. What is queued at exit is flushed. Error lines, which are rare and may be the last
//! words before an exit, go to stderr at once.
//!
//! By hand rather than `tracing-appender`'s non-blocking writer: that one wakes its thread
//! (a futex call) for every line that finds it idle, and writes each line on its own. The queue
//! is only ever polled (`try_recv`), never waited on: a receiver blocked in `recv` would make
//! every sender wake it with a system call.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::METRICS;

mod access;
pub use access::{AccessLine, access_log, install_access_log};

/// Lines the queue holds: at 40 000 lines per second, several seconds of a stalled sink.
pub const QUEUE_LINES: usize = 131_072;

/// How often the writer thread takes the queued lines.
const INTERVAL: Duration = Duration::from_millis(10);

/// Largest batch written at once.
const BATCH_BYTES: usize = 256 * 1024;

/// Most bytes queued: lines can be long (a path of a megabyte), and the queue must not grow the
/// process by gigabytes while stderr is stalled.
pub const QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// The `tracing_subscriber` writer: each line goes to the queue.
#[derive(Clone)]
pub struct LogWriter {
    queue: SyncSender<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    /// Counts what is dropped (`authgate_log_lines_dropped_total`).
    dropped: prometheus::IntCounter,
    /// Error lines go straight to stderr (the sink is stderr).
    errors_to_stderr: bool,
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

/// Starts the writer thread over stderr, with room for `capacity` lines.
pub fn start_stderr(capacity: usize) -> std::io::Result<(LogWriter, LogFlush)> {
    let (mut writer, flush) = start(std::io::stderr(), capacity)?;
    writer.errors_to_stderr = true;
    Ok((writer, flush))
}

/// Starts the writer thread over `sink`, with room for `capacity` lines.
pub fn start<W: Write + Send + 'static>(sink: W, capacity: usize) -> std::io::Result<(LogWriter, LogFlush)> {
    start_limited(sink, capacity, QUEUE_BYTES, METRICS.log_lines_dropped.clone())
}

/// `start` with room for `max_bytes` queued, counting dropped lines in `dropped`.
fn start_limited<W: Write + Send + 'static>(
    sink: W,
    capacity: usize,
    max_bytes: usize,
    dropped: prometheus::IntCounter,
) -> std::io::Result<(LogWriter, LogFlush)> {
    let (queue, lines) = sync_channel(capacity);
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let taken = Arc::clone(&queued_bytes);
    let lost = dropped.clone();
    let thread = std::thread::Builder::new()
        .name("authgate-log".into())
        .spawn(move || write_lines(lines, sink, &stopping, &taken, &lost))?;
    let writer = LogWriter { queue, queued_bytes, max_bytes, dropped, errors_to_stderr: false };
    Ok((writer, LogFlush { stop, thread: Some(thread) }))
}

/// The writer thread: every `INTERVAL`, everything queued, in batches.
fn write_lines<W: Write>(
    lines: Receiver<Vec<u8>>,
    mut sink: W,
    stop: &AtomicBool,
    queued: &AtomicUsize,
    dropped: &prometheus::IntCounter,
) {
    let mut batch = Batch { bytes: Vec::with_capacity(BATCH_BYTES), cut: false };
    loop {
        // read before draining: a line queued before the flag was set is drained below
        let stopping = stop.load(Ordering::Acquire);
        while let Ok(line) = lines.try_recv() {
            queued.fetch_sub(line.len(), Ordering::Relaxed);
            batch.bytes.extend_from_slice(&line);
            if batch.bytes.len() >= BATCH_BYTES {
                batch.write_to(&mut sink, stop, dropped);
            }
        }
        if !batch.bytes.is_empty() {
            batch.write_to(&mut sink, stop, dropped);
            let _ = sink.flush();
        }
        if stopping {
            return;
        }
        // parked rather than blocked on the queue, so that a line never has to wake this thread
        std::thread::park_timeout(INTERVAL);
    }
}

/// Lines taken from the queue, written together.
struct Batch {
    bytes: Vec<u8>,
    /// The last write failed partway through a line: the next batch starts on a new line, so
    /// that a JSON line is never glued to half of another.
    cut: bool,
}

impl Batch {
    /// Writes the batch and empties it; what the sink refuses is counted as dropped.
    fn write_to<W: Write>(&mut self, sink: &mut W, stop: &AtomicBool, dropped: &prometheus::IntCounter) {
        if std::mem::take(&mut self.cut) {
            let _ = sink.write_all(b"\n");
        }
        let mut written = 0;
        let mut waits = 0;
        while written < self.bytes.len() {
            match sink.write(&self.bytes[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // a non-blocking stderr: wait for it a little (at exit, not at all)
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && waits < 100
                        && !stop.load(Ordering::Relaxed) =>
                {
                    waits += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                // the reader is gone (EPIPE), the disk is full: the rest is lost, and counted
                Err(_) => break,
            }
        }
        if written < self.bytes.len() {
            let rest = &self.bytes[written..];
            let lost = rest.iter().filter(|&&b| b == b'\n').count() as u64;
            dropped.inc_by(lost.max(1));
            self.cut = written > 0 && self.bytes.get(written - 1) != Some(&b'\n');
        }
        self.bytes.clear();
    }
}

impl LogWriter {
    fn queue(&self, line: Vec<u8>) {
        let len = line.len();
        if self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped.inc();
            return;
        }
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                self.dropped.inc();
            }
        }
    }
}

/// One log line being written.
#[derive(Debug)]
pub struct LineWriter<'a> {
    writer: &'a LogWriter,
    line: Vec<u8>,
    /// Written to stderr at once rather than queued.
    urgent: bool,
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
        match (self.line.is_empty(), self.urgent) {
            (true, _) => {}
            (false, true) => {
                if std::io::stderr().write_all(&self.line).is_err() {
                    self.writer.dropped.inc();
                }
            }
            (false, false) => self.writer.queue(std::mem::take(&mut self.line)),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { writer: self, line: Vec::new(), urgent: false }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        // an error may be the last line before the process exits (Pingora exits on a failed
        // start right after logging why): never left in the queue
        let urgent = self.errors_to_stderr && *meta.level() == tracing::Level::ERROR;
        LineWriter { writer: self, line: Vec::new(), urgent }
    }
}

impl LogFlush {
    /// Writes what is queued and stops the writer thread, waiting at most `limit` for a sink
    /// that does not take it.
    pub fn finish(mut self, limit: Duration) {
        self.stop_within(limit);
    }

    fn stop_within(&mut self, limit: Duration) {
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
        // a no-op after `finish`
        self.stop_within(Duration::from_secs(2));
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

    /// A sink whose reader is gone after `take` bytes.
    struct Broken {
        take: usize,
        seen: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Broken {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.take == 0 {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.take);
            self.take -= n;
            self.seen.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A counter of this test's own (the tests run at once; the process-wide one is shared).
    fn counter() -> prometheus::IntCounter {
        prometheus::IntCounter::new("dropped", "dropped").unwrap()
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
        let dropped = counter();
        let (writer, flush) = start_limited(sink, 16, QUEUE_BYTES, dropped.clone()).unwrap();
        // the writer thread takes the first line and stalls writing it
        line(&writer, "first\n");
        entering.recv().unwrap();
        // 10 000 more against the stalled sink: this loop ending is the point (none waited for);
        // 16 fit in the queue, the rest are dropped and counted
        for i in 0..10_000 {
            line(&writer, &format!("line {i}\n"));
        }
        assert_eq!(dropped.get(), 10_000 - 16);
        for _ in 0..10 {
            let _ = release.send(());
        }
        flush.finish(Duration::from_secs(5));
        let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
        let want: String =
            std::iter::once("first\n".to_owned()).chain((0..16).map(|i| format!("line {i}\n"))).collect();
        assert_eq!(text, want, "the queued lines are written, in order");
    }

    #[test]
    fn lines_a_failing_sink_refuses_are_counted() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        // room for one line and half of the next
        let dropped = counter();
        let sink = Broken { take: 10, seen: Arc::clone(&seen) };
        let (writer, flush) = start_limited(sink, 64, QUEUE_BYTES, dropped.clone()).unwrap();
        for i in 0..3 {
            line(&writer, &format!("line {i}\n"));
        }
        flush.finish(Duration::from_secs(5));
        assert_eq!(dropped.get(), 2, "the cut line and the one after");
        assert_eq!(seen.lock().unwrap().as_slice(), b"line 0\nlin");
    }

    #[test]
    fn the_queue_holds_a_bounded_number_of_bytes() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (entered, entering) = mpsc::channel();
        let (release, released) = mpsc::channel();
        let sink = Stalled { entered, release: released, seen: Arc::clone(&seen) };
        let dropped = counter();
        let (writer, flush) = start_limited(sink, 1000, 1000, dropped.clone()).unwrap();
        line(&writer, "first\n");
        entering.recv().unwrap();
        // 100-byte lines: ten fit in 1000 bytes, whatever the room in lines
        let long = "x".repeat(99) + "\n";
        for _ in 0..50 {
            line(&writer, &long);
        }
        assert_eq!(dropped.get(), 40);
        for _ in 0..10 {
            let _ = release.send(());
        }
        flush.finish(Duration::from_secs(5));
        assert_eq!(seen.lock().unwrap().len(), 6 + 10 * 100);
    }
}
