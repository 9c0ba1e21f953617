//! The tamper-evident audit log: one metadata-only JSON line per API request (never prompt or
//! completion text, never a key), hash-chained, with periodic HMAC-signed checkpoints, so that
//! `sluice-gateway audit verify` can tell an untouched log from one edited, cut, added to or
//! reordered, and say where.
//!
//! [`record`] is what a line says, [`chain`] how lines are linked and signed, [`writer`] the
//! thread that writes them off the request path, [`verify`] the checker. Off unless
//! `--audit-log` is given; then the request path hands a [`RequestRecord`] to [`RequestAudit`]
//! and nothing else. The guarantees and their limits are in `docs/security.md#audit-log`.

pub mod chain;
pub mod record;
pub mod verify;
pub mod writer;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use chain::Signer;
pub use record::RequestRecord;
pub use writer::Destination;

use crate::metrics::AuditMetrics;
use crate::settings::Settings;

/// What can stop the audit log from starting, or its verifier from reading.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The checkpoint key.
    #[error(transparent)]
    Key(#[from] chain::KeyError),
    /// The log cannot be opened.
    #[error("cannot open audit log {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file given holds something else: continuing it would make a log nobody can verify.
    #[error("audit log {path}: {reason}; give a new file (or the audit log it was)")]
    NotAnAuditLog {
        /// The file.
        path: String,
        /// What is wrong with its end.
        reason: chain::NotAnAuditLine,
    },
    /// The log cannot be written.
    #[error("cannot write audit log {path}: {source}")]
    Write {
        /// The file (or `stdout`).
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The writer thread cannot be started.
    #[error("cannot start the audit writer thread: {0}")]
    Thread(std::io::Error),
    /// A file to verify cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The audit log of a running gateway: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Arc<writer::Queue>,
    metrics: AuditMetrics,
    /// How to write, until [`AuditLog::begin`] starts the writer with it.
    options: Mutex<Option<writer::Options>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AuditLog {
    /// The audit log `settings` ask for (`None` without `--audit-log`). The key file is read
    /// here, so a bad one stops the gateway before it loads anything; the log itself is opened
    /// by [`Self::begin`].
    pub fn from_settings(settings: &Settings, metrics: &AuditMetrics) -> Result<Option<Self>, Error> {
        let Some(path) = &settings.audit_log else { return Ok(None) };
        let destination =
            if path.as_os_str() == "stdout" { Destination::Stdout } else { Destination::File(path.clone()) };
        let signer = settings.audit_key_file.as_deref().map(Signer::from_file).transpose()?;
        let options = writer::Options {
            destination,
            signer,
            checkpoint_records: settings.audit_checkpoint_records.max(1),
            checkpoint_every: Duration::from_secs(settings.audit_checkpoint_seconds.max(1)),
        };
        Ok(Some(Self::new(options, metrics.clone())))
    }

    fn new(options: writer::Options, metrics: AuditMetrics) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue: Arc::default(),
                metrics,
                options: Mutex::new(Some(options)),
                thread: Mutex::new(None),
            }),
        }
    }

    /// Opens the log, writes the `start` line and starts the writer thread (once; later calls
    /// do nothing).
    pub fn begin(&self) -> Result<(), Error> {
        let Some(options) = self.shared.options.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return Ok(());
        };
        let (destination, signed) = (options.destination.clone(), options.signer.is_some());
        let writer = writer::Writer::open(self.shared.queue.clone(), options, self.shared.metrics.clone())?;
        let thread = std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || writer.run())
            .map_err(Error::Thread)?;
        *self.shared.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(thread);
        tracing::info!(audit_log = %destination, signed, "audit log open");
        Ok(())
    }

    /// The audit of one request from `client`.
    pub fn request(&self, client: IpAddr) -> RequestAudit {
        RequestAudit { log: self.clone(), client }
    }

    /// Writes what is queued and the final checkpoint, and stops the writer (at a graceful
    /// shutdown, once every request has been settled). Records after this are dropped and counted.
    pub fn close(&self) {
        self.shared.queue.close();
        let thread = self.shared.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread {
            thread.thread().unpark();
            if thread.join().is_err() {
                tracing::error!("the audit writer thread panicked: the log has no final checkpoint");
            }
        }
    }
}

/// The audit of one request: where its record goes, and its client's address.
#[derive(Clone)]
pub struct RequestAudit {
    log: AuditLog,
    client: IpAddr,
}

impl RequestAudit {
    /// The client's address, for its record.
    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// Hands `record` to the writer (dropped and counted if its queue is full).
    pub fn record(&self, record: RequestRecord) {
        self.log.shared.queue.push(record, &self.log.shared.metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_log_has_every_record_and_a_final_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let options = writer::Options {
            destination: Destination::File(path.clone()),
            signer: None,
            checkpoint_records: 1000,
            checkpoint_every: Duration::from_secs(60),
        };
        let metrics = AuditMetrics::default();
        let log = AuditLog::new(options, metrics.clone());
        log.begin().expect("opens");
        let audit = log.request("127.0.0.1".parse().expect("address"));
        for _ in 0..10 {
            audit.record(RequestRecord { client: audit.client(), ..record::sample() });
        }
        log.close();
        let text = std::fs::read_to_string(&path).expect("read");
        let kinds: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON")["type"].to_string())
            .collect();
        assert_eq!(kinds.len(), 12, "{text}");
        assert_eq!(kinds.first().map(String::as_str), Some("\"start\""));
        assert_eq!(kinds.last().map(String::as_str), Some("\"checkpoint\""));
        assert!(text.lines().all(|l| l.contains("\"client\":\"127.0.0.1\"") || !l.contains("\"request\"")));
        assert_eq!(metrics.records.get(), 10);
        let options = verify::Options::default();
        let verdict = verify::verify_files(&[path], &options).expect("readable");
        assert!(matches!(verdict, verify::Verdict::Intact(_)), "{verdict}");
    }
}
