//! The audit writer: a thread of its own takes the records the request path queued, writes each
//! as a chained line, adds checkpoints, and writes them out, so the request path never formats,
//! hashes nor waits for a disk.
//!
//! The hand-off copies the logging module's measured design (a locked `Vec`, drained by a thread
//! that wakes on a timer, never per record): waking a writer per line cost a quarter of the
//! gateway's throughput there. Unlike the access log, the queue is bounded and a record that
//! does not fit is dropped, not waited for: a disk that stalls must not stall requests. Drops
//! are counted (`sluice_audit_records_dropped_total`) and written into the chain as a `gap`
//! line, so a loss is a signed, visible fact and a hole in `seq` is always tampering. Measured
//! (`tests::measure`): about 120 ns of CPU per record on the request path, 1.1 µs on this thread
//! (serialised, hashed, signed), so the queue fills only when the destination stalls.
//!
//! Files are appended to and `fsync`ed after each checkpoint (and at shutdown); a restart
//! continues the chain from the file's last line, and a file renamed away (rotated) is sealed
//! with a checkpoint and replaced by a new file at the same path, continuing the chain.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::Error;
use super::chain::{Chain, Signer, StartFacts};
use super::record::RequestRecord;
use crate::metrics::AuditMetrics;

/// How often the writer takes what was queued: a record reaches the file this long after its
/// request ended, at most (plus the write).
pub(super) const TICK: Duration = Duration::from_millis(50);
/// Records queued at most. At 40,000 requests a second that is 1.6 s of a stalled disk before
/// records are dropped; a queued record takes at most 256 bytes (16 MiB in all, reached only
/// while the destination stalls).
pub(super) const QUEUE_RECORDS: usize = 64 * 1024;
/// How often a file destination checks that its path still names the open file.
const ROTATION_CHECK: Duration = Duration::from_secs(1);
/// How much of an existing file's end is read to find its last line (lines are far shorter).
const TAIL_WINDOW: u64 = 64 * 1024;

/// Where audit lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Appended to this file.
    File(PathBuf),
    /// Written to stdout among the log lines (each audit line starts `{"sluice_audit":1,`).
    Stdout,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Stdout => f.write_str("stdout"),
        }
    }
}

/// How the writer works.
#[derive(Clone, Debug)]
pub(super) struct Options {
    pub destination: Destination,
    pub signer: Option<Signer>,
    pub checkpoint_records: u64,
    pub checkpoint_every: Duration,
}

/// Records between the request path and the writer.
#[derive(Debug, Default)]
pub(super) struct Queue {
    records: Mutex<Vec<RequestRecord>>,
    /// Records dropped since the writer last wrote a gap line.
    dropped: AtomicU64,
    /// Set, under the `records` lock, once the writer is told to finish: later records are
    /// dropped (they could only follow the final checkpoint).
    closed: AtomicBool,
}

fn lock(records: &Mutex<Vec<RequestRecord>>) -> MutexGuard<'_, Vec<RequestRecord>> {
    records.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Queue {
    /// Queues `record`, or drops and counts it when the queue is full or closed.
    pub(super) fn push(&self, record: RequestRecord, metrics: &AuditMetrics) {
        let mut records = lock(&self.records);
        if records.len() < QUEUE_RECORDS && !self.closed.load(Ordering::Relaxed) {
            records.push(record);
            return;
        }
        drop(records);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        metrics.dropped.inc();
    }

    /// No record is queued after this returns.
    pub(super) fn close(&self) {
        let _records = lock(&self.records);
        self.closed.store(true, Ordering::Relaxed);
    }

    fn is_closed(&self) -> bool {
        let _records = lock(&self.records);
        self.closed.load(Ordering::Relaxed)
    }
}

/// The open destination.
enum Sink {
    File {
        path: PathBuf,
        file: File,
        /// Device and inode of `file`, to notice when `path` names another file.
        identity: (u64, u64),
    },
    Stdout,
}

impl Sink {
    /// Opens `destination`: a file is created or appended to, continuing the chain of its last
    /// line; returns the chain and how many bytes of a cut-short last line were removed.
    fn open(destination: &Destination) -> Result<(Self, Chain, u64), Error> {
        let path = match destination {
            Destination::Stdout => return Ok((Self::Stdout, Chain::genesis(), 0)),
            Destination::File(path) => path,
        };
        let shown = || path.display().to_string();
        let mut file = open_append(path).map_err(|source| Error::Open { path: shown(), source })?;
        let (chain, truncated) = resume(&mut file).map_err(|reason| Error::NotAnAuditLog { path: shown(), reason })?;
        let identity = identity(&file).map_err(|source| Error::Open { path: shown(), source })?;
        Ok((Self::File { path: path.clone(), file, identity }, chain, truncated))
    }

    /// Writes as much of `bytes` as it can; returns how much.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::File { file, .. } => file.write(bytes),
            // Whole, under stdout's lock: the log writer shares stdout, and a line split between
            // two writes could have a log line written into its middle.
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()?;
                Ok(bytes.len())
            }
        }
    }

    /// Makes what was written durable.
    fn sync(&mut self) -> std::io::Result<()> {
        match self {
            Self::File { file, .. } => file.sync_data(),
            Self::Stdout => Ok(()),
        }
    }

    /// Whether the path no longer names the open file (it was renamed away or removed).
    fn rotated(&self) -> bool {
        match self {
            Self::File { path, identity, .. } => {
                std::fs::metadata(path).map_or(true, |meta| (meta.dev(), meta.ino()) != *identity)
            }
            Self::Stdout => false,
        }
    }

    /// Opens a new file at the path, after [`Self::rotated`].
    fn reopen(&mut self) -> std::io::Result<()> {
        if let Self::File { path, file, identity } = self {
            let new = open_append(path)?;
            *identity = self::identity(&new)?;
            *file = new;
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    // Readable to find the last line; not readable by others (it names keys, clients, usage).
    OpenOptions::new().read(true).append(true).create(true).mode(0o640).open(path)
}

fn identity(file: &File) -> std::io::Result<(u64, u64)> {
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

/// The chain continuing after `file`'s last line (a new one for an empty file). A last line
/// without its newline was cut short by a crash: it is removed (it was never a record) and the
/// number of bytes removed returned, to be said in the `start` line.
fn resume(file: &mut File) -> Result<(Chain, u64), super::chain::NotAnAuditLine> {
    let not_audit = |reason: &str| super::chain::NotAnAuditLine(reason.to_owned());
    let io = |e: std::io::Error| super::chain::NotAnAuditLine(e.to_string());
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok((Chain::genesis(), 0));
    }
    let from = len.saturating_sub(TAIL_WINDOW);
    file.seek(SeekFrom::Start(from)).map_err(io)?;
    let mut tail = Vec::with_capacity((len - from) as usize);
    file.read_to_end(&mut tail).map_err(io)?;
    let complete = match memchr::memrchr(b'\n', &tail) {
        Some(end) => end + 1,
        None if from == 0 => 0,
        None => return Err(not_audit("no line end in its last 64 KiB")),
    };
    // Only the start of an audit line is cut away: any other file is left as it is.
    let partial = &tail[complete..];
    let prefix = super::chain::LINE_PREFIX.as_bytes();
    if !partial.is_empty() && !partial.starts_with(prefix) && !prefix.starts_with(partial) {
        return Err(not_audit("its last line is unfinished and not an audit record"));
    }
    let lines = &tail[..complete];
    let chain = if lines.is_empty() {
        Chain::genesis()
    } else {
        let body = &lines[..lines.len() - 1];
        let line = match memchr::memrchr(b'\n', body) {
            Some(start) => &body[start + 1..],
            None if from == 0 => body,
            None => return Err(not_audit("a line longer than 64 KiB")),
        };
        Chain::resume(line)?
    };
    let truncated = partial.len() as u64;
    if truncated > 0 {
        file.set_len(len - truncated).map_err(io)?;
    }
    Ok((chain, truncated))
}

/// The writer thread's state.
pub(super) struct Writer {
    queue: std::sync::Arc<Queue>,
    options: Options,
    metrics: AuditMetrics,
    chain: Chain,
    sink: Sink,
    /// Lines made but not yet written (all of them, unless the destination fails).
    pending: Vec<u8>,
    /// Request lines and checkpoints in `pending`, counted once written.
    pending_counts: (u64, u64),
    /// The records being written, swapped with the queue's (both keep their capacity).
    batch: Vec<RequestRecord>,
    /// Request and gap lines since the last checkpoint.
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// A checkpoint was made since the last `fsync`.
    unsynced_checkpoint: bool,
    last_rotation_check: Instant,
    /// The destination is failing (warned once per failure, not per tick).
    failing: bool,
}

impl Writer {
    /// Opens the destination and writes the `start` line, durably: a gateway that cannot write
    /// its audit log does not start.
    pub(super) fn open(queue: std::sync::Arc<Queue>, options: Options, metrics: AuditMetrics) -> Result<Self, Error> {
        let (sink, mut chain, truncated_bytes) = Sink::open(&options.destination)?;
        let facts = StartFacts {
            version: env!("CARGO_PKG_VERSION"),
            key_fingerprint: options.signer.as_ref().map(|s| s.fingerprint().to_owned()),
            checkpoint_records: options.checkpoint_records,
            checkpoint_seconds: options.checkpoint_every.as_secs(),
            truncated_bytes,
        };
        let mut pending = Vec::with_capacity(64 * 1024);
        chain.start(&mut pending, Timestamp::now(), &facts);
        let now = Instant::now();
        let mut writer = Self {
            queue,
            options,
            metrics,
            chain,
            sink,
            pending,
            pending_counts: (0, 0),
            batch: Vec::with_capacity(4096),
            since_checkpoint: 0,
            last_checkpoint: now,
            unsynced_checkpoint: false,
            last_rotation_check: now,
            failing: false,
        };
        let shown = writer.options.destination.to_string();
        writer.write_pending().map_err(|source| Error::Write { path: shown.clone(), source })?;
        writer.sink.sync().map_err(|source| Error::Write { path: shown, source })?;
        if truncated_bytes > 0 {
            tracing::warn!(audit_log = %writer.options.destination, truncated_bytes,
                "audit log: removed an incomplete last line (a write cut short by a crash)");
        }
        Ok(writer)
    }

    /// The thread's body: a batch every tick until the queue is closed, then the last records
    /// and the final checkpoint.
    pub(super) fn run(mut self) {
        while !self.queue.is_closed() {
            std::thread::park_timeout(TICK);
            self.tick();
        }
        self.finish();
    }

    fn tick(&mut self) {
        // While earlier lines cannot be written, nothing new is taken: the queue fills, and what
        // it cannot hold is counted and declared in a gap line once writing works again.
        if !self.flush() {
            return;
        }
        self.take();
        if self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= self.options.checkpoint_every {
            self.checkpoint(false);
        }
        if self.flush() && self.last_rotation_check.elapsed() >= ROTATION_CHECK {
            self.last_rotation_check = Instant::now();
            if self.sink.rotated() {
                self.rotate();
            }
        }
    }

    /// Writes the queued records (and a gap line for those dropped), with the checkpoints due.
    fn take(&mut self) {
        std::mem::swap(&mut *lock(&self.queue.records), &mut self.batch);
        let dropped = self.queue.dropped.swap(0, Ordering::Relaxed);
        let mut batch = std::mem::take(&mut self.batch);
        for record in batch.drain(..) {
            self.chain.request(&mut self.pending, &record);
            self.pending_counts.0 += 1;
            self.counted_line();
        }
        self.batch = batch;
        if dropped > 0 {
            self.chain.gap(&mut self.pending, Timestamp::now(), dropped);
            self.counted_line();
        }
    }

    /// One more line the next checkpoint covers; a checkpoint when it is due by count.
    fn counted_line(&mut self) {
        self.since_checkpoint += 1;
        if self.since_checkpoint >= self.options.checkpoint_records {
            self.checkpoint(false);
        }
    }

    fn checkpoint(&mut self, last: bool) {
        self.chain.checkpoint(&mut self.pending, Timestamp::now(), last, self.options.signer.as_ref());
        self.pending_counts.1 += 1;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.unsynced_checkpoint = true;
    }

    /// Seals the renamed file with a checkpoint and continues the chain in a new file at the path.
    fn rotate(&mut self) {
        self.checkpoint(false);
        if !self.flush() {
            return;
        }
        match self.sink.reopen() {
            Ok(()) => tracing::info!(audit_log = %self.options.destination, next_seq = self.chain.next_seq(),
                "audit log rotated: the old file ends with a checkpoint, the chain continues in a new file"),
            Err(error) => tracing::warn!(audit_log = %self.options.destination, %error,
                "audit log rotated, but a new file cannot be opened: writing on to the old one"),
        }
    }

    /// The last records and the final checkpoint, written and synced.
    fn finish(&mut self) {
        self.flush();
        self.take();
        self.checkpoint(true);
        if self.flush() {
            tracing::info!(audit_log = %self.options.destination, next_seq = self.chain.next_seq(),
                "audit log closed with a final checkpoint");
        } else {
            tracing::warn!(audit_log = %self.options.destination, unwritten_bytes = self.pending.len(),
                "audit log closed, but its last lines could not be written");
        }
    }

    /// Writes what is pending and syncs after a checkpoint; false while the destination fails.
    fn flush(&mut self) -> bool {
        let written = self
            .write_pending()
            .and_then(|()| if std::mem::take(&mut self.unsynced_checkpoint) { self.sink.sync() } else { Ok(()) });
        match written {
            Ok(()) => {
                let (requests, checkpoints) = std::mem::take(&mut self.pending_counts);
                self.metrics.records.inc_by(requests);
                self.metrics.checkpoints.inc_by(checkpoints);
                if std::mem::take(&mut self.failing) {
                    tracing::info!(audit_log = %self.options.destination, "audit log writable again");
                }
                true
            }
            Err(error) => {
                // A failed sync is retried with the next checkpoint's.
                self.unsynced_checkpoint = true;
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::error!(audit_log = %self.options.destination, %error,
                        "cannot write the audit log: records are kept, then dropped and counted, until it works");
                }
                false
            }
        }
    }

    /// Writes `pending` out; a partial write leaves the rest pending, so lines are never lost
    /// or split by a retry.
    fn write_pending(&mut self) -> std::io::Result<()> {
        while !self.pending.is_empty() {
            match self.sink.write(&self.pending) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(path: &Path, checkpoint_records: u64) -> Options {
        Options {
            destination: Destination::File(path.to_owned()),
            signer: Some(Signer::new(b"0123456789abcdef0123456789abcdef")),
            checkpoint_records,
            checkpoint_every: Duration::from_secs(3600),
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    }

    fn kinds(lines: &[serde_json::Value]) -> Vec<&str> {
        lines.iter().map(|l| l["type"].as_str().expect("type")).collect()
    }

    #[test]
    fn records_are_chained_with_checkpoints_by_count_and_a_final_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let queue = std::sync::Arc::new(Queue::default());
        let metrics = AuditMetrics::default();
        let mut writer = Writer::open(queue.clone(), options(&path, 2), metrics.clone()).expect("opens");
        for _ in 0..3 {
            queue.push(super::super::record::sample(), &metrics);
        }
        writer.tick();
        queue.close();
        writer.finish();
        let lines = lines(&path);
        assert_eq!(kinds(&lines), ["start", "request", "request", "checkpoint", "request", "checkpoint"]);
        assert_eq!(lines[5]["final"], true);
        assert_eq!(lines[3]["final"], false);
        assert_eq!(metrics.records.get(), 3);
        assert_eq!(metrics.checkpoints.get(), 2);
        // A record after closing is dropped and counted, never written after the final checkpoint.
        queue.push(super::super::record::sample(), &metrics);
        assert_eq!(metrics.dropped.get(), 1);
    }

    #[test]
    fn a_full_queue_drops_and_the_chain_says_how_many() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let queue = std::sync::Arc::new(Queue::default());
        let metrics = AuditMetrics::default();
        let mut writer = Writer::open(queue.clone(), options(&path, 1_000_000), metrics.clone()).expect("opens");
        for _ in 0..QUEUE_RECORDS + 5 {
            queue.push(super::super::record::sample(), &metrics);
        }
        assert_eq!(metrics.dropped.get(), 5);
        writer.tick();
        queue.close();
        writer.finish();
        let lines = lines(&path);
        assert_eq!(lines.len(), 1 + QUEUE_RECORDS + 2);
        let gap = &lines[QUEUE_RECORDS + 1];
        assert_eq!(gap["type"], "gap");
        assert_eq!(gap["dropped"], 5);
    }

    #[test]
    fn a_restart_continues_the_chain_of_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        for _ in 0..2 {
            let queue = std::sync::Arc::new(Queue::default());
            let metrics = AuditMetrics::default();
            let mut writer = Writer::open(queue.clone(), options(&path, 100), metrics.clone()).expect("opens");
            queue.push(super::super::record::sample(), &metrics);
            queue.close();
            writer.finish();
        }
        let lines = lines(&path);
        assert_eq!(kinds(&lines), ["start", "request", "checkpoint", "start", "request", "checkpoint"]);
        let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().expect("seq")).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4, 5]);
        let text = std::fs::read_to_string(&path).expect("read");
        let third = text.lines().nth(2).expect("line 3");
        assert_eq!(lines[3]["prev"], hex::encode(super::super::chain::line_hash(third.as_bytes())));
    }

    #[test]
    fn a_cut_short_last_line_is_removed_and_said() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        {
            let queue = std::sync::Arc::new(Queue::default());
            let writer = Writer::open(queue, options(&path, 100), AuditMetrics::default()).expect("opens");
            drop(writer);
        }
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(b"{\"sluice_audit\":1,\"type\":\"requ").expect("write");
        drop(file);
        let queue = std::sync::Arc::new(Queue::default());
        let mut writer = Writer::open(queue.clone(), options(&path, 100), AuditMetrics::default()).expect("opens");
        queue.close();
        writer.finish();
        let lines = lines(&path);
        assert_eq!(kinds(&lines), ["start", "start", "checkpoint"]);
        assert_eq!(lines[1]["truncated_bytes"], 30);
        assert_eq!(lines[1]["seq"], 1);
    }

    #[test]
    fn a_file_that_is_not_an_audit_log_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("other.log");
        std::fs::write(&path, "2026-11-22T03:37:26Z INFO something\n").expect("write");
        let queue = std::sync::Arc::new(Queue::default());
        let error = Writer::open(queue, options(&path, 100), AuditMetrics::default()).err().expect("refused");
        assert!(error.to_string().contains("not an audit record"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "2026-11-22T03:37:26Z INFO something\n");
    }

    #[test]
    fn a_rotated_file_is_sealed_and_the_chain_continues_in_a_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let queue = std::sync::Arc::new(Queue::default());
        let metrics = AuditMetrics::default();
        let mut writer = Writer::open(queue.clone(), options(&path, 100), metrics.clone()).expect("opens");
        queue.push(super::super::record::sample(), &metrics);
        writer.tick();
        std::fs::rename(&path, dir.path().join("audit.log.1")).expect("rename");
        writer.last_rotation_check = Instant::now() - ROTATION_CHECK;
        writer.tick();
        queue.push(super::super::record::sample(), &metrics);
        queue.close();
        writer.finish();
        let old = lines(&dir.path().join("audit.log.1"));
        assert_eq!(kinds(&old), ["start", "request", "checkpoint"]);
        let new = lines(&path);
        assert_eq!(kinds(&new), ["request", "checkpoint"]);
        assert_eq!(new[0]["seq"], 3);
    }

    /// Measures the request path's hand-off and the writer's capacity (figures, not a pass/fail
    /// benchmark): `cargo test -p sluice-gateway --lib audit::writer::tests::measure --
    /// --ignored --nocapture`, ideally with `--release`.
    #[test]
    #[ignore = "a measurement, run by hand"]
    #[allow(clippy::print_stderr)]
    fn measure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let record = super::super::record::sample();
        let queue = std::sync::Arc::new(Queue::default());
        let metrics = AuditMetrics::default();
        let mut writer = Writer::open(queue.clone(), options(&path, 1000), metrics.clone()).expect("opens");

        // CPU time as well as wall time: on a shared machine a thread also waits for a core.
        let on_cpu = || {
            let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
            stat.split(' ').next().and_then(|ns| ns.parse::<u64>().ok()).unwrap_or_default()
        };
        // The request path: a record made of shared strings, queued, from this thread, then from
        // two at once (contending for the lock far more than requests ever do).
        let per_thread = QUEUE_RECORDS / 4 - 16;
        let (started, cpu) = (Instant::now(), on_cpu());
        for _ in 0..2 * per_thread {
            queue.push(record.clone(), &metrics);
        }
        let alone_cpu = (on_cpu() - cpu) as f64 / (2 * per_thread) as f64;
        let alone = started.elapsed().as_nanos() as f64 / (2 * per_thread) as f64;
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..per_thread {
                        queue.push(record.clone(), &metrics);
                    }
                });
            }
        });
        let contended = started.elapsed().as_nanos() as f64 / (2 * per_thread) as f64;
        assert_eq!(metrics.dropped.get(), 0);

        // The writer: lines made (serialised, hashed, checkpoints signed), then written.
        let (started, cpu) = (Instant::now(), on_cpu());
        writer.take();
        let (made, made_cpu_ns) = (started.elapsed(), on_cpu() - cpu);
        let started = Instant::now();
        assert!(writer.flush());
        let written = started.elapsed();
        let records = (4 * per_thread) as f64;
        let bytes = std::fs::metadata(&path).expect("size").len() as f64;
        eprintln!(
            "hand-off: {alone:.0} ns per record ({alone_cpu:.0} ns of CPU) from 1 thread, {contended:.0} ns from 2 \
             threads at once; writer: {:.0} \
             records/s made (serialised, hashed, signed; {:.0} ns of CPU each), {:.0} records/s written ({:.0} \
             bytes a line)",
            records / made.as_secs_f64(),
            made_cpu_ns as f64 / records,
            records / written.as_secs_f64(),
            bytes / records,
        );

        // Pushing as fast as two threads can, with the writer on its own thread: what it keeps
        // up with, and what is dropped.
        let thread = std::thread::spawn(move || writer.run());
        let (pushed, started) = (AtomicU64::new(0), Instant::now());
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    while started.elapsed() < Duration::from_secs(2) {
                        queue.push(record.clone(), &metrics);
                        pushed.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        queue.close();
        thread.join().expect("writer");
        let (pushed, dropped) = (pushed.into_inner(), metrics.dropped.get());
        eprintln!(
            "flooded for 2 s: {:.0} records/s offered, {:.0} records/s written, {dropped} dropped ({:.1}%)",
            pushed as f64 / 2.0,
            (pushed - dropped) as f64 / 2.0,
            dropped as f64 * 100.0 / pushed as f64
        );
        assert_eq!(metrics.records.get() + dropped, 4 * per_thread as u64 + pushed);
        let summary = match super::super::verify::verify_files(&[path], &super::super::verify::Options::default()) {
            Ok(super::super::verify::Verdict::Intact(summary)) => summary,
            other => panic!("{other:?}"),
        };
        assert_eq!(summary.dropped, dropped);
    }
}
