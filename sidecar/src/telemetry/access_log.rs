//! The access log's writer: requests hand their line to a bounded queue without waiting, and
//! one thread writes the queue to stdout. When stdout stalls (a full pipe, a slow log
//! collector), the queue fills and further lines are dropped and counted in
//! `trellis_access_log_dropped_lines_total`; a request never waits on a write.

// `println!` took stdout's global lock and wrote on a runtime worker, so one stalled reader of
// stdout stopped every request that logged. `sync_channel`'s `try_send` takes no lock.

use prometheus_client::metrics::counter::Counter;
use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// Lines waiting to be written; about 2 MB of JSON lines at most.
pub const QUEUE_LINES: usize = 4096;

/// Where requests send their access-log line; `off` when access logs are off.
pub struct AccessLog {
    tx: Option<SyncSender<String>>,
    dropped: Counter,
}

impl AccessLog {
    /// Access logs off: nothing is queued or written.
    pub fn off(dropped: Counter) -> AccessLog {
        AccessLog { tx: None, dropped }
    }

    /// Lines go to stdout, from a thread of their own.
    pub fn stdout(dropped: Counter) -> AccessLog {
        AccessLog::to_writer(std::io::stdout(), QUEUE_LINES, dropped)
    }

    /// Lines go to `out`, one per line, from a thread of their own, through a queue of
    /// `capacity` lines.
    pub fn to_writer<W: Write + Send + 'static>(
        out: W,
        capacity: usize,
        dropped: Counter,
    ) -> AccessLog {
        let (tx, rx) = sync_channel(capacity);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out));
        match spawned {
            Ok(_) => AccessLog {
                tx: Some(tx),
                dropped,
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the access-log writer; access logs are off");
                AccessLog::off(dropped)
            }
        }
    }

    /// Queues `line` without waiting; a full queue drops it and counts it.
    pub fn write(&self, line: String) {
        let Some(tx) = &self.tx else { return };
        // Full: stdout is behind. Disconnected: the writer is gone (stdout closed).
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(line) {
            self.dropped.inc();
        }
    }
}

/// The writer thread: a line at a time, flushed whenever the queue is empty, so a quiet
/// proxy's last lines do not sit in a buffer. Ends when every sender is gone or `out` fails.
fn write_lines<W: Write>(rx: Receiver<String>, out: W) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = rx.recv() {
        let mut line = Some(first);
        while let Some(l) = line {
            if writeln!(out, "{l}").is_err() {
                return;
            }
            line = rx.try_recv().ok();
        }
        if out.flush().is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex, mpsc};

    /// A writer that blocks until the test lets it go, like a pipe nobody reads.
    struct Stalled {
        entered: mpsc::Sender<()>,
        release: Arc<Mutex<mpsc::Receiver<()>>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.release.lock().unwrap().recv();
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_stdout_drops_and_counts_lines_without_blocking() {
        let (entered_tx, entered) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let written = Arc::new(Mutex::new(Vec::new()));
        let out = Stalled {
            entered: entered_tx,
            release: Arc::new(Mutex::new(release_rx)),
            written: written.clone(),
        };
        let dropped = Counter::default();
        let log = AccessLog::to_writer(out, 8, dropped.clone());
        log.write("line 0".into());
        // The writer has taken line 0 and is stuck writing it.
        entered.recv().unwrap();
        for i in 1..=8 {
            log.write(format!("line {i}"));
        }
        assert_eq!(dropped.get(), 0, "the queue holds 8 lines");
        // These find the queue full. Were `write` to wait, this loop would never end.
        for i in 9..109 {
            log.write(format!("line {i}"));
        }
        assert_eq!(
            dropped.get(),
            100,
            "every line past the queue was dropped and counted"
        );

        // Unstall: the queued lines are written, in order, and nothing else.
        drop(release_tx);
        drop(log);
        for _ in 0..200 {
            let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
            if text.lines().count() == 9 {
                let want: Vec<String> = (0..=8).map(|i| format!("line {i}")).collect();
                assert_eq!(text.lines().collect::<Vec<_>>(), want);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!(
            "the queued lines were not written: {:?}",
            written.lock().unwrap()
        );
    }
}
