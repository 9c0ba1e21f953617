//! The hash chain and its signed checkpoints: every line carries `seq` (one more than the line
//! before it) and `prev` (the hex SHA-256 of the line before it, its exact bytes without the
//! newline), so changing, removing, adding or moving any line breaks the chain at that point;
//! a `checkpoint` line signs the chain so far with an HMAC-SHA256 key, so the chain cannot be
//! recomputed after an edit by someone without the key.
//!
//! The writer and the verifier share this module: how a line begins, what is hashed and what is
//! signed are spelled once.

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::record::{RequestRecord, write_name, write_number, write_optional, write_time};

/// The version of the line format, the value of every line's first field.
pub const FORMAT: u64 = 1;

/// Every line starts with these bytes: what a log collector matches to route audit lines apart
/// from log lines sharing a stream.
pub const LINE_PREFIX: &str = "{\"sluice_audit\":1,";

/// What follows a checkpoint's signed bytes: the signature covers the line up to here.
pub const SIGNATURE_FIELD: &[u8] = b",\"signature\":";

/// Algorithm names in `alg`.
pub const HMAC_SHA256: &str = "hmac-sha256";
/// No key: unsigned.
pub const UNSIGNED: &str = "none";

/// The kinds of line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A gateway process began writing: the first line of a chain, or a restart continuing one.
    Start,
    /// One API request.
    Request,
    /// Records the writer could not take (its queue was full), counted.
    Gap,
    /// The chain so far, signed.
    Checkpoint,
}

impl Kind {
    /// As `type` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Request => "request",
            Self::Gap => "gap",
            Self::Checkpoint => "checkpoint",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Start, Self::Request, Self::Gap, Self::Checkpoint].into_iter().find(|kind| kind.as_str() == name)
    }
}

/// SHA-256 of a line's bytes (without its newline): the next line's `prev`.
pub fn line_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

/// The bytes a checkpoint's signature covers: the line up to `,"signature":`.
pub fn signed_part(line: &[u8]) -> Option<&[u8]> {
    memchr::memmem::rfind(line, SIGNATURE_FIELD).map(|end| &line[..end])
}

/// What can be wrong with a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// It could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Too short to be a key.
    #[error(
        "key file {path}: the key must have at least {min} bytes (it has {len}); make one with `openssl rand -hex 32`"
    )]
    TooShort {
        /// The file.
        path: String,
        /// Its key's length.
        len: usize,
        /// The least accepted.
        min: usize,
    },
}

/// An HMAC-SHA256 key for checkpoints. Only the keyed HMAC state is kept; `Debug` shows the
/// key's fingerprint.
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
    fingerprint: String,
}

/// The shortest key accepted, in bytes: 128 bits.
const MIN_KEY_BYTES: usize = 16;

impl Signer {
    /// The key in `path`: the file's bytes, with surrounding whitespace (a trailing newline) removed.
    pub fn from_file(path: &std::path::Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read { path: shown.clone(), source })?;
        let key = bytes.trim_ascii();
        if key.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort { path: shown, len: key.len(), min: MIN_KEY_BYTES });
        }
        Ok(Self::new(key))
    }

    /// A signer with `key`.
    pub fn new(key: &[u8]) -> Self {
        let mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
            Ok(mac) => mac,
            // HMAC takes keys of any length (longer ones are hashed first).
            Err(_) => unreachable!("HMAC-SHA256 accepts every key length"),
        };
        let mut signer = Self { mac, fingerprint: String::new() };
        // Derived through the HMAC, not a hash of the key itself: it names the key (so a
        // verifier can tell "wrong key" from "bad signature") and reveals no more about it than
        // any signature does.
        let mark = signer.sign(b"sluice-audit key fingerprint");
        signer.fingerprint = hex::encode(&mark[..8]);
        signer
    }

    /// Names the key in checkpoints: 16 hex digits.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The signature of `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// Whether `signature` is this key's of `bytes` (compared in constant time).
    pub fn verify(&self, bytes: &[u8], signature: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(bytes);
        mac.verify_slice(signature).is_ok()
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

/// What a `start` line says about the process that writes the chain from there.
#[derive(Clone, Debug)]
pub struct StartFacts {
    /// The gateway's version.
    pub version: &'static str,
    /// The checkpoint key's fingerprint, if any.
    pub key_fingerprint: Option<String>,
    /// A checkpoint every this many records...
    pub checkpoint_records: u64,
    /// ...and every this many seconds with records.
    pub checkpoint_seconds: u64,
    /// Bytes of an incomplete last line (a write cut short by a crash) removed from the file
    /// before this line; 0 normally.
    pub truncated_bytes: u64,
}

/// The chain's state: the next line's `seq` and `prev`.
#[derive(Clone, Debug)]
pub struct Chain {
    next_seq: u64,
    head: Option<[u8; 32]>,
}

/// Why the last line of an existing file cannot be continued.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotAnAuditLine(pub(super) String);

impl Chain {
    /// A new chain: its first line has `seq` 0 and no `prev`.
    pub fn genesis() -> Self {
        Self { next_seq: 0, head: None }
    }

    /// The chain continuing after `line`, the last line of an existing log.
    pub fn resume(line: &[u8]) -> Result<Self, NotAnAuditLine> {
        #[derive(serde::Deserialize)]
        struct Tail {
            sluice_audit: u64,
            seq: u64,
        }
        let not_audit = |why: String| NotAnAuditLine(format!("its last line is not an audit record ({why})"));
        let tail: Tail = serde_json::from_slice(line).map_err(|e| not_audit(e.to_string()))?;
        if tail.sluice_audit != FORMAT || !line.starts_with(LINE_PREFIX.as_bytes()) {
            return Err(not_audit(format!("format {}", tail.sluice_audit)));
        }
        Ok(Self { next_seq: tail.seq + 1, head: Some(line_hash(line)) })
    }

    /// The `seq` of the next line.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends a `start` line to `out`.
    pub fn start(&mut self, out: &mut Vec<u8>, time: Timestamp, facts: &StartFacts) {
        let begin = self.open(out, Kind::Start);
        write_time(out, time);
        write_name(out, "gateway");
        write_optional(out, Some(facts.version));
        write_name(out, "alg");
        write_optional(out, Some(if facts.key_fingerprint.is_some() { HMAC_SHA256 } else { UNSIGNED }));
        write_name(out, "key_fingerprint");
        write_optional(out, facts.key_fingerprint.as_deref());
        write_name(out, "checkpoint_records");
        write_number(out, facts.checkpoint_records);
        write_name(out, "checkpoint_seconds");
        write_number(out, facts.checkpoint_seconds);
        write_name(out, "truncated_bytes");
        write_number(out, facts.truncated_bytes);
        self.close(out, begin);
    }

    /// Appends a `request` line to `out`.
    pub fn request(&mut self, out: &mut Vec<u8>, record: &RequestRecord) {
        let begin = self.open(out, Kind::Request);
        record.write_fields(out);
        self.close(out, begin);
    }

    /// Appends a `gap` line: `dropped` records were lost before it.
    pub fn gap(&mut self, out: &mut Vec<u8>, time: Timestamp, dropped: u64) {
        let begin = self.open(out, Kind::Gap);
        write_time(out, time);
        write_name(out, "dropped");
        write_number(out, dropped);
        self.close(out, begin);
    }

    /// Appends a `checkpoint` line, signed by `signer` (unsigned without one); `last` at a
    /// graceful shutdown.
    pub fn checkpoint(&mut self, out: &mut Vec<u8>, time: Timestamp, last: bool, signer: Option<&Signer>) {
        let begin = self.open(out, Kind::Checkpoint);
        write_time(out, time);
        write_name(out, "final");
        out.extend_from_slice(if last { b"true" } else { b"false" });
        write_name(out, "alg");
        write_optional(out, Some(if signer.is_some() { HMAC_SHA256 } else { UNSIGNED }));
        write_name(out, "key_fingerprint");
        write_optional(out, signer.map(Signer::fingerprint));
        let signature = signer.map(|signer| hex::encode(signer.sign(&out[begin..])));
        out.extend_from_slice(SIGNATURE_FIELD);
        write_optional(out, signature.as_deref());
        self.close(out, begin);
    }

    /// Writes the fields every line begins with; returns where the line begins in `out`.
    fn open(&self, out: &mut Vec<u8>, kind: Kind) -> usize {
        let begin = out.len();
        out.extend_from_slice(LINE_PREFIX.as_bytes());
        out.extend_from_slice(b"\"type\":\"");
        out.extend_from_slice(kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"seq\":");
        write_number(out, self.next_seq);
        write_name(out, "prev");
        match &self.head {
            Some(hash) => {
                out.push(b'"');
                out.extend_from_slice(hex::encode(hash).as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        begin
    }

    /// Ends the line begun at `begin` and moves the chain past it.
    fn close(&mut self, out: &mut Vec<u8>, begin: usize) {
        out.push(b'}');
        self.head = Some(line_hash(&out[begin..]));
        self.next_seq += 1;
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> StartFacts {
        StartFacts {
            version: "0.1.0",
            key_fingerprint: None,
            checkpoint_records: 1000,
            checkpoint_seconds: 60,
            truncated_bytes: 0,
        }
    }

    fn lines(out: &[u8]) -> Vec<&[u8]> {
        out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect()
    }

    #[test]
    fn each_line_names_the_hash_of_the_one_before() {
        let mut chain = Chain::genesis();
        let mut out = Vec::new();
        let time: Timestamp = "2026-11-22T03:37:26Z".parse().expect("time");
        chain.start(&mut out, time, &facts());
        chain.request(&mut out, &super::super::record::sample());
        chain.gap(&mut out, time, 3);
        let lines = lines(&out);
        assert_eq!(lines.len(), 3);
        let parsed: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_slice(l).expect("JSON")).collect();
        assert_eq!(parsed[0]["seq"], 0);
        assert_eq!(parsed[0]["prev"], serde_json::Value::Null);
        for i in 1..3 {
            assert_eq!(parsed[i]["seq"], i as u64);
            assert_eq!(parsed[i]["prev"], hex::encode(line_hash(lines[i - 1])));
        }
        assert!(lines.iter().all(|l| l.starts_with(LINE_PREFIX.as_bytes())));
        assert_eq!(parsed[2]["dropped"], 3);
        assert_eq!(chain.next_seq(), 3);
    }

    #[test]
    fn a_checkpoint_signs_everything_before_its_signature() {
        let signer = Signer::new(b"0123456789abcdef0123456789abcdef");
        let mut chain = Chain::genesis();
        let mut out = Vec::new();
        let time: Timestamp = "2026-11-22T03:37:26Z".parse().expect("time");
        chain.start(&mut out, time, &facts());
        chain.checkpoint(&mut out, time, true, Some(&signer));
        let line = lines(&out)[1].to_vec();
        let parsed: serde_json::Value = serde_json::from_slice(&line).expect("JSON");
        assert_eq!(parsed["type"], "checkpoint");
        assert_eq!(parsed["final"], true);
        assert_eq!(parsed["alg"], HMAC_SHA256);
        assert_eq!(parsed["key_fingerprint"], signer.fingerprint());
        let signature = hex::decode(parsed["signature"].as_str().expect("signed")).expect("hex");
        let signed = signed_part(&line).expect("a signature field");
        assert!(signer.verify(signed, &signature));
        assert!(!Signer::new(b"another key, long enough").verify(signed, &signature));
        let mut changed = signed.to_vec();
        changed[20] ^= 1;
        assert!(!signer.verify(&changed, &signature));
        assert!(!format!("{signer:?}").contains("0123456789abcdef0123"), "the key stays out of Debug");
    }

    #[test]
    fn an_unsigned_checkpoint_says_so() {
        let mut chain = Chain::genesis();
        let mut out = Vec::new();
        chain.checkpoint(&mut out, Timestamp::UNIX_EPOCH, false, None);
        let parsed: serde_json::Value = serde_json::from_slice(lines(&out)[0]).expect("JSON");
        assert_eq!(parsed["alg"], UNSIGNED);
        assert_eq!(parsed["signature"], serde_json::Value::Null);
        assert_eq!(parsed["key_fingerprint"], serde_json::Value::Null);
    }

    #[test]
    fn a_chain_resumes_after_the_last_line_of_a_log() {
        let mut first = Chain::genesis();
        let mut out = Vec::new();
        first.start(&mut out, Timestamp::UNIX_EPOCH, &facts());
        first.request(&mut out, &super::super::record::sample());
        let last = lines(&out)[1].to_vec();
        let resumed = Chain::resume(&last).expect("an audit line");
        assert_eq!(resumed.next_seq(), 2);
        assert_eq!(resumed.head, first.head);
        assert!(Chain::resume(br#"{"level":"info","seq":3}"#).is_err());
        assert!(Chain::resume(b"not json").is_err());
    }

    #[test]
    fn short_key_files_are_refused_and_whitespace_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").expect("write");
        let error = Signer::from_file(&short).expect_err("too short");
        assert!(error.to_string().contains("at least 16 bytes"), "{error}");
        assert!(!error.to_string().contains("abc"), "the key stays out of errors: {error}");
        let good = dir.path().join("good");
        std::fs::write(&good, "0123456789abcdef0123456789abcdef\n").expect("write");
        let signer = Signer::from_file(&good).expect("a key");
        assert_eq!(signer.fingerprint(), Signer::new(b"0123456789abcdef0123456789abcdef").fingerprint());
        assert_eq!(signer.fingerprint().len(), 16);
    }
}
