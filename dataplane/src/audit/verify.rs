//! `sluice-gateway audit verify`: reads audit log files in order (rotated segments, oldest
//! first) as one chain and either summarises an intact log or names the first line that breaks
//! it (file, line number, seq) and what is wrong: a changed line, a missing, added or moved one,
//! a bad or foreign signature.
//!
//! Only two lines are held at a time (the one checked and the next, read ahead to tell an edit
//! from an insertion or a swap), so logs of any size verify in constant memory.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use super::Error;
use super::chain::{FORMAT, HMAC_SHA256, Kind, Signer, UNSIGNED, line_hash, signed_part};

/// How to verify.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Checkpoint keys (several while keys were rotated); without any, signatures are not checked.
    pub keys: Vec<Signer>,
    /// The first file continues earlier files not given: its first line's `prev` is not checked.
    pub continued: bool,
    /// A chain not closed by a final checkpoint (a crash, or a cut tail) is a failure, not a note.
    pub require_final: bool,
}

/// Where a line is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file, as given.
    pub file: Arc<str>,
    /// Its line number, from 1.
    pub line: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// What is wrong at a line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Not JSON, or not an audit line.
    #[error("not an audit record ({0})")]
    Malformed(String),
    /// A line without its newline before the end of the log.
    #[error("an incomplete line (no line end) before the end of the log")]
    Incomplete,
    /// The first line given is not the first line of a chain.
    #[error(
        "the log does not begin with a chain's first line (a start with seq 0 and no prev): its beginning was \
         removed, or it continues earlier files (give them first, or pass --continued)"
    )]
    NoGenesis,
    /// A new chain begins where the previous one goes on.
    #[error(
        "a new chain (start with seq 0 and no prev) begins in the middle of a file after a chain that was not \
         closed: lines were replaced"
    )]
    RestartMidFile,
    /// `seq` jumps forward.
    #[error("{}", missing(*from, *to))]
    Missing {
        /// The first seq missing.
        from: u64,
        /// The last seq missing.
        to: u64,
    },
    /// Records in the wrong order.
    #[error("out of order: seq {found} where seq {expected} belongs (lines swapped or moved)")]
    OutOfOrder {
        /// The seq found.
        found: u64,
        /// The seq that belongs here.
        expected: u64,
    },
    /// `seq` goes back or repeats.
    #[error("seq {found} after seq {previous}: a copy of an earlier line, or lines out of order")]
    Backwards {
        /// The seq found.
        found: u64,
        /// The seq of the line before.
        previous: u64,
    },
    /// The line's `prev` is right but its `seq` is not.
    #[error("seq {found} where seq {expected} belongs: its seq was changed")]
    SeqChanged {
        /// The seq found.
        found: u64,
        /// The seq that belongs here.
        expected: u64,
    },
    /// A line that is not part of the chain.
    #[error("added: not part of the chain (the line after it follows the line before it); inserted or moved here")]
    Inserted,
    /// A line whose bytes were changed.
    #[error("changed: its hash no longer matches the prev of the line after it (line {next_line})")]
    Changed {
        /// The line whose `prev` names the original.
        next_line: u64,
    },
    /// `prev` does not match, and which of the two lines changed cannot be told.
    #[error("prev does not match the hash of the line before it ({previous}): one of the two was changed")]
    PrevMismatch {
        /// The line before.
        previous: Location,
    },
    /// A checkpoint whose signature does not hold.
    #[error(
        "bad signature: this checkpoint, or a line since the previous checkpoint, was changed (and the chain \
         recomputed)"
    )]
    BadSignature,
    /// A checkpoint signed with a key not given.
    #[error("signed with key {found}, not with the key given ({given}): wrong key")]
    WrongKey {
        /// The checkpoint's key fingerprint.
        found: String,
        /// The fingerprints of the keys given.
        given: String,
    },
    /// An unsigned checkpoint while a key was given.
    #[error("unsigned checkpoint, but a key was given: without a signature anyone can rewrite the chain")]
    Unsigned,
    /// A chain that ends without its final checkpoint (with `--require-final`).
    #[error(
        "the chain ends here without a final checkpoint: the gateway crashed or is still running, or the lines \
         after this one were cut"
    )]
    NotClosed,
    /// No line at all.
    #[error("no audit records")]
    Empty,
}

fn missing(from: u64, to: u64) -> String {
    if from == to {
        format!("seq {from} is missing before this line: a line was removed")
    } else {
        format!("seqs {from} to {to} are missing before this line: lines were removed")
    }
}

/// The first line found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Where.
    pub at: Location,
    /// The line's seq, when it has one.
    pub seq: Option<u64>,
    /// What is wrong.
    pub problem: Problem,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "{} (seq {seq}): {}", self.at, self.problem),
            None => write!(f, "{}: {}", self.at, self.problem),
        }
    }
}

/// What an intact log holds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Files read.
    pub files: usize,
    /// Lines read.
    pub lines: u64,
    /// `request` lines.
    pub requests: u64,
    /// `start` lines (gateway processes).
    pub starts: u64,
    /// `checkpoint` lines.
    pub checkpoints: u64,
    /// Checkpoints whose signature was checked with a key given.
    pub verified: u64,
    /// Signed checkpoints not checked (no key given).
    pub unchecked: u64,
    /// Unsigned checkpoints.
    pub unsigned: u64,
    /// Fingerprints of the keys that signed.
    pub fingerprints: BTreeSet<String>,
    /// `gap` lines, and the records they declare lost.
    pub gaps: u64,
    /// Records the gateway dropped (its queue was full), as its gap lines declare.
    pub dropped: u64,
    /// First and last seq.
    pub seqs: Option<(u64, u64)>,
    /// Earliest and latest time.
    pub span: Option<(String, String)>,
    /// The log ends with a final checkpoint.
    pub closed: bool,
    /// Lines after the last checkpoint (covered by no signature).
    pub after_last_checkpoint: u64,
    /// Things worth knowing that are not tampering.
    pub notes: Vec<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (first, last) = self.seqs.unwrap_or_default();
        writeln!(
            f,
            "intact: {}, {}, seq {first} to {last}: {}, {}, {}, {}",
            counted(self.files as u64, "file"),
            counted(self.lines, "line"),
            counted(self.requests, "request"),
            counted(self.starts, "start"),
            counted(self.checkpoints, "checkpoint"),
            counted(self.gaps, "gap"),
        )?;
        if let Some((from, to)) = &self.span {
            writeln!(f, "time: {from} to {to}")?;
        }
        let keys = self.fingerprints.iter().cloned().collect::<Vec<_>>().join(", ");
        match (self.verified, self.unchecked, self.unsigned) {
            _ if self.checkpoints == 0 => writeln!(f, "signed: no checkpoint yet")?,
            (verified, 0, 0) => {
                writeln!(f, "signed: {}, signatures verified (key {keys})", counted(verified, "checkpoint"))?
            }
            (0, unchecked, 0) => writeln!(
                f,
                "signed: {} (key {keys}), signatures NOT checked: give --key-file",
                counted(unchecked, "checkpoint")
            )?,
            (0, 0, _) => writeln!(
                f,
                "unsigned: the gateway had no --audit-key-file; the chain shows edits, but anyone who can write \
                 the file can recompute it"
            )?,
            (verified, unchecked, unsigned) => writeln!(
                f,
                "signed: {verified} checkpoints verified, {unchecked} signed but not checked, {unsigned} unsigned"
            )?,
        }
        if self.closed {
            writeln!(f, "end: closed by a final checkpoint (graceful shutdown)")?;
        } else if self.after_last_checkpoint == 0 {
            writeln!(
                f,
                "end: NOT closed by a final checkpoint (the last checkpoint is not final): the gateway is running or \
                 crashed, or the end was cut"
            )?;
        } else {
            writeln!(
                f,
                "end: NOT closed by a final checkpoint: the gateway is running or crashed, or the end was cut; {} \
                 after the last checkpoint signed by none",
                counted(self.after_last_checkpoint, "line")
            )?;
        }
        if self.dropped > 0 {
            writeln!(
                f,
                "dropped: {} the gateway could not queue (declared in {})",
                counted(self.dropped, "record"),
                counted(self.gaps, "gap line")
            )?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

/// `1 line`, `2 lines`.
fn counted(n: u64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// The outcome of a verification.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// No tampering found.
    Intact(Summary),
    /// The first line found wrong.
    Tampered(Finding),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Intact(summary) => summary.fmt(f),
            Self::Tampered(finding) => write!(f, "TAMPERED: {finding}"),
        }
    }
}

/// Verifies the files at `paths`, in order, as one log.
pub fn verify_files(paths: &[PathBuf], options: &Options) -> Result<Verdict, Error> {
    let segments = paths
        .iter()
        .map(|path| {
            let shown = path.display().to_string();
            std::fs::File::open(path)
                .map(|file| (shown.clone(), std::io::BufReader::with_capacity(256 * 1024, file)))
                .map_err(|source| Error::Read { path: shown, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    verify(segments, options)
}

/// One line as read.
struct Entry {
    at: Location,
    bytes: Vec<u8>,
    hash: [u8; 32],
    /// It ended with a newline.
    complete: bool,
    first_in_file: bool,
    record: Result<Parsed, String>,
}

/// The fields the verifier reads.
#[derive(serde::Deserialize)]
struct Parsed {
    sluice_audit: u64,
    #[serde(rename = "type")]
    kind: String,
    seq: u64,
    prev: Option<String>,
    time: String,
    #[serde(rename = "final", default)]
    last: bool,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    key_fingerprint: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    dropped: u64,
    #[serde(default)]
    truncated_bytes: u64,
}

impl Parsed {
    fn follows(&self, line: &Seen) -> bool {
        self.seq == line.seq.wrapping_add(1) && self.prev.as_deref() == Some(line.hex.as_str())
    }
}

/// A line already checked.
struct Seen {
    at: Location,
    seq: u64,
    hex: String,
    /// A final checkpoint: the chain was closed here.
    closes: bool,
}

/// Reads lines from each segment in turn.
struct Lines<R> {
    segments: std::vec::IntoIter<(String, R)>,
    current: Option<(Arc<str>, R, u64)>,
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let (name, reader) = self.segments.next()?;
                self.current = Some((name.into(), reader, 0));
            }
            let (file, reader, number) = self.current.as_mut()?;
            let mut bytes = Vec::with_capacity(512);
            match reader.read_until(b'\n', &mut bytes) {
                Err(source) => return Some(Err(Error::Read { path: file.to_string(), source })),
                Ok(0) => {
                    self.current = None;
                    continue;
                }
                Ok(_) => {}
            }
            *number += 1;
            let complete = bytes.last() == Some(&b'\n');
            if complete {
                bytes.pop();
            }
            let record = serde_json::from_slice::<Parsed>(&bytes).map_err(|e| e.to_string());
            return Some(Ok(Entry {
                at: Location { file: file.clone(), line: *number },
                hash: line_hash(&bytes),
                bytes,
                complete,
                first_in_file: *number == 1,
                record,
            }));
        }
    }
}

/// Verifies `segments` (name and reader of each file, oldest first) as one log.
pub fn verify<R: BufRead>(segments: Vec<(String, R)>, options: &Options) -> Result<Verdict, Error> {
    let mut summary = Summary { files: segments.len(), ..Summary::default() };
    let first_file: Arc<str> = segments.first().map_or_else(|| "".into(), |(name, _)| name.as_str().into());
    let mut lines = Lines { segments: segments.into_iter(), current: None }.peekable();
    let mut previous: Option<Seen> = None;
    let mut before: Option<Seen> = None;
    let tampered =
        |at: &Location, seq: Option<u64>, problem| Ok(Verdict::Tampered(Finding { at: at.clone(), seq, problem }));
    while let Some(entry) = lines.next() {
        let entry = entry?;
        let at_end = lines.peek().is_none();
        let next = match lines.peek() {
            Some(Ok(next)) => Some(next),
            _ => None,
        };
        summary.lines += 1;
        if !entry.complete {
            if at_end {
                summary.notes.push(format!(
                    "{}: the last line is incomplete (a write cut short: the gateway crashed, or is writing now); \
                     not checked",
                    entry.at
                ));
                summary.lines -= 1;
                break;
            }
            return tampered(&entry.at, None, Problem::Incomplete);
        }
        let record = match &entry.record {
            Ok(record) => record,
            Err(reason) => return tampered(&entry.at, None, Problem::Malformed(reason.clone())),
        };
        let seq = Some(record.seq);
        if record.sluice_audit != FORMAT {
            return tampered(&entry.at, seq, Problem::Malformed(format!("format {}", record.sluice_audit)));
        }
        let Some(kind) = Kind::parse(&record.kind) else {
            return tampered(&entry.at, seq, Problem::Malformed(format!("unknown type {:?}", record.kind)));
        };
        let genesis = kind == Kind::Start && record.prev.is_none();
        if genesis && record.seq != 0 {
            return tampered(&entry.at, seq, Problem::SeqChanged { found: record.seq, expected: 0 });
        }
        match &previous {
            None if genesis => {}
            None if options.continued => summary.notes.push(format!(
                "{}: begins at seq {}, continuing earlier files not given (its prev is not checked)",
                entry.at, record.seq
            )),
            None => return tampered(&entry.at, seq, Problem::NoGenesis),
            Some(last) if genesis => {
                // A new chain: legitimate after a closed one, or at the top of a file (a new file,
                // or a new process writing to stdout).
                if !last.closes && !entry.first_in_file {
                    return tampered(&entry.at, seq, Problem::RestartMidFile);
                }
                if !last.closes {
                    if options.require_final {
                        return tampered(&last.at, Some(last.seq), Problem::NotClosed);
                    }
                    summary.notes.push(format!(
                        "{} (seq {}): the chain ends without a final checkpoint and a new chain begins at {}: \
                         the gateway crashed, or lines after {} were removed",
                        last.at, last.seq, entry.at, last.at
                    ));
                }
            }
            Some(last) if record.follows(last) => {
                if kind == Kind::Start && !last.closes {
                    if options.require_final {
                        return tampered(&last.at, Some(last.seq), Problem::NotClosed);
                    }
                    summary.notes.push(format!(
                        "{}: the gateway restarted after seq {} without a final checkpoint (it crashed, or lines \
                         after {} were removed)",
                        entry.at, last.seq, last.at
                    ));
                }
            }
            Some(last) => {
                let (at, seq, problem) = diagnose(&entry, record, last, before.as_ref(), next, &options.keys);
                return tampered(&at, seq, problem);
            }
        }
        match kind {
            Kind::Checkpoint => {
                if let Err(problem) = check_signature(&entry, record, &options.keys, &mut summary) {
                    return tampered(&entry.at, seq, problem);
                }
                summary.checkpoints += 1;
                summary.after_last_checkpoint = 0;
            }
            Kind::Start => {
                summary.starts += 1;
                if record.truncated_bytes > 0 {
                    summary.notes.push(format!(
                        "{}: the gateway removed an incomplete last line of {} bytes before this start (a write \
                         cut short by a crash)",
                        entry.at, record.truncated_bytes
                    ));
                }
            }
            Kind::Request => {
                summary.requests += 1;
                summary.after_last_checkpoint += 1;
            }
            Kind::Gap => {
                summary.gaps += 1;
                summary.dropped += record.dropped;
                summary.after_last_checkpoint += 1;
            }
        }
        summary.seqs = Some(summary.seqs.map_or((record.seq, record.seq), |(first, _)| (first, record.seq)));
        summary.span = Some(match summary.span.take() {
            None => (record.time.clone(), record.time.clone()),
            Some((from, to)) => (from.min(record.time.clone()), to.max(record.time.clone())),
        });
        before = previous.take();
        previous = Some(Seen {
            at: entry.at.clone(),
            seq: record.seq,
            hex: hex::encode(entry.hash),
            closes: kind == Kind::Checkpoint && record.last,
        });
    }
    let Some(last) = previous else {
        return tampered(&Location { file: first_file, line: 0 }, None, Problem::Empty);
    };
    summary.closed = last.closes;
    if !last.closes && options.require_final {
        return tampered(&last.at, Some(last.seq), Problem::NotClosed);
    }
    Ok(Verdict::Intact(summary))
}

/// Which line is wrong when `entry` does not follow `last`: read with the line before `last` and
/// the line after `entry`, to tell an added line from a changed or swapped one.
fn diagnose(
    entry: &Entry,
    record: &Parsed,
    last: &Seen,
    before: Option<&Seen>,
    next: Option<&Entry>,
    keys: &[Signer],
) -> (Location, Option<u64>, Problem) {
    let here = (entry.at.clone(), Some(record.seq));
    let expected = last.seq.wrapping_add(1);
    let next_record = next.and_then(|n| n.record.as_ref().ok());
    let entry_seen = Seen { at: entry.at.clone(), seq: record.seq, hex: hex::encode(entry.hash), closes: false };
    // This line and the next are swapped: this one follows the next.
    if let (Some(next), Some(next_record)) = (next, next_record) {
        let next_seen = Seen { at: next.at.clone(), seq: next_record.seq, hex: hex::encode(next.hash), closes: false };
        if record.follows(&next_seen) {
            return (here.0, here.1, Problem::OutOfOrder { found: record.seq, expected });
        }
    }
    // The line before was added: this one follows the line before it.
    if let Some(before) = before
        && record.follows(before)
    {
        return (last.at.clone(), Some(last.seq), Problem::Inserted);
    }
    // This line was added: the next one follows the line before it.
    if next_record.is_some_and(|next| next.follows(last)) {
        return (here.0, here.1, Problem::Inserted);
    }
    if record.prev.as_deref() == Some(last.hex.as_str()) {
        return (here.0, here.1, Problem::SeqChanged { found: record.seq, expected });
    }
    if record.seq > expected {
        if next_record.is_some_and(|next| next.seq == expected) {
            return (here.0, here.1, Problem::OutOfOrder { found: record.seq, expected });
        }
        return (here.0, here.1, Problem::Missing { from: expected, to: record.seq - 1 });
    }
    if record.seq < expected {
        return (here.0, here.1, Problem::Backwards { found: record.seq, previous: last.seq });
    }
    // The seq is right and the prev is not: the line before changed if this one is vouched for,
    // by the next line's prev or by its own valid signature.
    let vouched = next_record.is_some_and(|next| next.follows(&entry_seen))
        || (record.kind == Kind::Checkpoint.as_str()
            && !keys.is_empty()
            && check_signature(entry, record, keys, &mut Summary::default()).is_ok());
    if vouched {
        let next_line = entry.at.line;
        return (last.at.clone(), Some(last.seq), Problem::Changed { next_line });
    }
    (here.0, here.1, Problem::PrevMismatch { previous: last.at.clone() })
}

/// Checks a checkpoint's signature against `keys` (counted in `summary`).
fn check_signature(entry: &Entry, record: &Parsed, keys: &[Signer], summary: &mut Summary) -> Result<(), Problem> {
    match (record.alg.as_deref(), &record.signature, &record.key_fingerprint) {
        (Some(UNSIGNED), None, None) => {
            if !keys.is_empty() {
                return Err(Problem::Unsigned);
            }
            summary.unsigned += 1;
            Ok(())
        }
        (Some(HMAC_SHA256), Some(signature), Some(fingerprint)) => {
            summary.fingerprints.insert(fingerprint.clone());
            if keys.is_empty() {
                summary.unchecked += 1;
                return Ok(());
            }
            let Some(key) = keys.iter().find(|key| key.fingerprint() == fingerprint) else {
                let given = keys.iter().map(Signer::fingerprint).collect::<Vec<_>>().join(", ");
                return Err(Problem::WrongKey { found: fingerprint.clone(), given });
            };
            let signature = hex::decode(signature).map_err(|_| Problem::BadSignature)?;
            let signed = signed_part(&entry.bytes).ok_or(Problem::BadSignature)?;
            if !key.verify(signed, &signature) {
                return Err(Problem::BadSignature);
            }
            summary.verified += 1;
            Ok(())
        }
        _ => Err(Problem::Malformed("a checkpoint without a consistent alg, key_fingerprint and signature".into())),
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::super::chain::{Chain, StartFacts};
    use super::super::record::{RequestRecord, sample};
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn facts(signer: Option<&Signer>) -> StartFacts {
        StartFacts {
            version: "0.1.0",
            key_fingerprint: signer.map(|s| s.fingerprint().to_owned()),
            checkpoint_records: 3,
            checkpoint_seconds: 60,
            truncated_bytes: 0,
        }
    }

    /// A log of one process: start, then `requests` requests with a checkpoint after every
    /// third, and a final checkpoint. Request `i` has status `200 + i`.
    fn log(requests: u64, signer: Option<&Signer>) -> Vec<String> {
        let mut chain = Chain::genesis();
        let mut out = Vec::new();
        let time: Timestamp = "2026-11-22T03:37:26Z".parse().expect("time");
        chain.start(&mut out, time, &facts(signer));
        for i in 0..requests {
            let record = RequestRecord { status: 200 + i as u16, ..sample() };
            chain.request(&mut out, &record);
            if i % 3 == 2 {
                chain.checkpoint(&mut out, time, false, signer);
            }
        }
        chain.checkpoint(&mut out, time, true, signer);
        String::from_utf8(out).expect("UTF-8").lines().map(str::to_owned).collect()
    }

    fn strict_options() -> Options {
        Options { require_final: true, ..options(&[KEY]) }
    }

    fn options(keys: &[&[u8]]) -> Options {
        Options { keys: keys.iter().map(|k| Signer::new(k)).collect(), ..Options::default() }
    }

    fn check(files: &[Vec<String>], options: &Options) -> Verdict {
        let segments = files
            .iter()
            .enumerate()
            .map(|(i, lines)| {
                let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
                (format!("audit.log.{i}"), std::io::Cursor::new(text.into_bytes()))
            })
            .collect();
        verify(segments, options).expect("in memory")
    }

    fn intact(files: &[Vec<String>], options: &Options) -> Summary {
        match check(files, options) {
            Verdict::Intact(summary) => summary,
            Verdict::Tampered(finding) => panic!("expected intact, got {finding}"),
        }
    }

    fn finding(files: &[Vec<String>], options: &Options) -> Finding {
        match check(files, options) {
            Verdict::Tampered(finding) => finding,
            Verdict::Intact(summary) => panic!("expected tampering to be found:\n{summary}"),
        }
    }

    #[test]
    fn an_untouched_signed_log_is_intact_and_summarised() {
        let signer = Signer::new(KEY);
        let lines = log(7, Some(&signer));
        // start, 7 requests, 2 checkpoints by count, the final one.
        assert_eq!(lines.len(), 11);
        let summary = intact(&[lines], &options(&[KEY]));
        assert_eq!((summary.requests, summary.starts, summary.checkpoints), (7, 1, 3));
        assert_eq!(summary.verified, 3);
        assert!(summary.closed);
        assert_eq!(summary.seqs, Some((0, 10)));
        let text = summary.to_string();
        assert!(text.starts_with("intact: 1 file, 11 lines, seq 0 to 10: 7 requests"), "{text}");
        assert!(text.contains("signatures verified"), "{text}");
        assert!(text.contains("closed by a final checkpoint"), "{text}");
        assert!(text.contains("time: 2026-11-22T03:37:26.000000Z to 2026-11-22T03:37:26.442598Z"), "{text}");
    }

    #[test]
    fn without_a_key_signatures_are_reported_unchecked_and_unsigned_logs_say_so() {
        let signer = Signer::new(KEY);
        let summary = intact(&[log(4, Some(&signer))], &Options::default());
        assert_eq!((summary.verified, summary.unchecked), (0, 2));
        assert!(summary.to_string().contains("NOT checked"), "{summary}");
        let summary = intact(&[log(4, None)], &Options::default());
        assert_eq!(summary.unsigned, 2);
        assert!(summary.to_string().starts_with("intact") && summary.to_string().contains("unsigned: "));
    }

    #[test]
    fn an_edited_field_names_the_edited_line() {
        let mut lines = log(7, None);
        // Line 4 is request 2 (status 202).
        lines[3] = lines[3].replace("\"status\":202", "\"status\":500");
        let found = finding(&[lines], &Options::default());
        assert_eq!(found.at.line, 4, "{found}");
        assert_eq!(found.seq, Some(3));
        assert!(matches!(found.problem, Problem::Changed { next_line: 5 }), "{found}");
    }

    #[test]
    fn an_edit_with_the_chain_recomputed_fails_the_next_signature() {
        let signer = Signer::new(KEY);
        let lines = log(7, Some(&signer));
        // Rewrite request 1 and recompute every prev after it, as someone without the key can.
        let mut edited = Vec::new();
        let mut previous: Option<String> = None;
        for (i, line) in lines.iter().enumerate() {
            let text = match i {
                2 => line.replace("\"prompt_tokens\":8", "\"prompt_tokens\":1"),
                3.. => rewrite_prev(line, previous.as_deref().expect("prev")),
                _ => line.clone(),
            };
            previous = Some(hex::encode(line_hash(text.as_bytes())));
            edited.push(text);
        }
        let found = finding(&[edited], &options(&[KEY]));
        // The first checkpoint (line 5) no longer signs what it covers.
        assert_eq!(found.at.line, 5, "{found}");
        assert_eq!(found.problem, Problem::BadSignature);
    }

    fn rewrite_prev(line: &str, prev: &str) -> String {
        let start = line.find("\"prev\":\"").expect("a prev") + "\"prev\":\"".len();
        format!("{}{prev}{}", &line[..start], &line[start + 64..])
    }

    #[test]
    fn a_deleted_line_names_where_it_was() {
        let mut lines = log(7, None);
        lines.remove(3);
        let found = finding(&[lines], &Options::default());
        assert_eq!(found.at.line, 4, "{found}");
        assert_eq!(found.problem, Problem::Missing { from: 3, to: 3 });
        assert!(found.to_string().contains("seq 3 is missing"), "{found}");
    }

    #[test]
    fn a_deleted_first_line_is_found() {
        let mut lines = log(4, None);
        lines.remove(0);
        let found = finding(&[lines], &Options::default());
        assert_eq!((found.at.line, &found.problem), (1, &Problem::NoGenesis), "{found}");
    }

    #[test]
    fn an_inserted_line_is_named() {
        let lines = log(7, None);
        // A forged record that fits the chain where it was put: the line after it does not.
        let mut forged = lines.clone();
        let fake = {
            let mut chain = Chain::resume(lines[2].as_bytes()).expect("resumes");
            let mut out = Vec::new();
            chain.request(&mut out, &RequestRecord { status: 204, ..sample() });
            String::from_utf8(out).expect("UTF-8").trim_end().to_owned()
        };
        forged.insert(3, fake);
        let found = finding(&[forged], &Options::default());
        assert_eq!((found.at.line, &found.problem), (4, &Problem::Inserted), "{found}");
        // A copy of an earlier line put later.
        let mut copied = lines.clone();
        copied.insert(6, lines[1].clone());
        let found = finding(&[copied], &Options::default());
        assert_eq!((found.at.line, &found.problem), (7, &Problem::Inserted), "{found}");
        // A line that is not a record at all.
        let mut garbage = lines;
        garbage.insert(2, "hello".into());
        let found = finding(&[garbage], &Options::default());
        assert_eq!(found.at.line, 3, "{found}");
        assert!(matches!(found.problem, Problem::Malformed(_)), "{found}");
    }

    #[test]
    fn swapped_lines_are_out_of_order() {
        let mut lines = log(7, None);
        lines.swap(5, 6);
        let found = finding(&[lines], &Options::default());
        assert_eq!(found.at.line, 6, "{found}");
        assert_eq!(found.problem, Problem::OutOfOrder { found: 6, expected: 5 });
    }

    #[test]
    fn a_truncated_tail_after_a_checkpoint_is_reported_and_fails_when_a_final_one_is_required() {
        let signer = Signer::new(KEY);
        let mut lines = log(7, Some(&signer));
        assert_eq!(intact(std::slice::from_ref(&lines), &strict_options()).requests, 7);
        // Cut after the first checkpoint (line 5): the later records and the final checkpoint go.
        lines.truncate(5);
        let summary = intact(std::slice::from_ref(&lines), &options(&[KEY]));
        assert!(!summary.closed);
        assert!(summary.to_string().contains("NOT closed by a final checkpoint"), "{summary}");
        let found = finding(std::slice::from_ref(&lines), &strict_options());
        assert_eq!((found.at.line, &found.problem), (5, &Problem::NotClosed), "{found}");
        // Cut between checkpoints: the lines after the last one are counted.
        let summary = intact(&[log(7, Some(&signer))[..7].to_vec()], &options(&[KEY]));
        assert_eq!(summary.after_last_checkpoint, 2);
        assert!(summary.to_string().contains("2 lines after the last checkpoint signed by none"), "{summary}");
    }

    #[test]
    fn a_changed_signature_is_a_bad_signature() {
        let signer = Signer::new(KEY);
        let mut lines = log(4, Some(&signer));
        let line = &lines[4];
        let at = line.rfind("\"signature\":\"").expect("signed") + "\"signature\":\"".len();
        let flipped = if &line[at..=at] == "0" { "1" } else { "0" };
        lines[4] = format!("{}{flipped}{}", &line[..at], &line[at + 1..]);
        let found = finding(&[lines], &options(&[KEY]));
        assert_eq!((found.at.line, &found.problem), (5, &Problem::BadSignature), "{found}");
    }

    #[test]
    fn the_wrong_key_is_named_as_such() {
        let signer = Signer::new(KEY);
        let lines = log(4, Some(&signer));
        let found = finding(std::slice::from_ref(&lines), &options(&[b"another key of enough length"]));
        assert_eq!(found.at.line, 5, "{found}");
        assert!(
            matches!(&found.problem, Problem::WrongKey { found, .. } if found == signer.fingerprint()),
            "{found:?}"
        );
        // Several keys (rotated): the one that signed is used.
        intact(&[lines], &options(&[b"another key of enough length", KEY]));
    }

    #[test]
    fn with_a_key_an_unsigned_checkpoint_fails() {
        let found = finding(&[log(4, None)], &options(&[KEY]));
        assert_eq!((found.at.line, &found.problem), (5, &Problem::Unsigned), "{found}");
    }

    #[test]
    fn restarts_and_rotated_segments_verify_as_one_chain() {
        let signer = Signer::new(KEY);
        let first = log(4, Some(&signer));
        // A restart appending to the same file: its start follows the final checkpoint.
        let mut chain = Chain::resume(first.last().expect("lines").as_bytes()).expect("resumes");
        let mut out = Vec::new();
        let time = Timestamp::UNIX_EPOCH;
        chain.start(&mut out, time, &facts(Some(&signer)));
        chain.request(&mut out, &sample());
        // Rotated here: the rest goes to a second file.
        let rotated_at = out.len();
        chain.request(&mut out, &sample());
        chain.checkpoint(&mut out, time, true, Some(&signer));
        let text = String::from_utf8(out).expect("UTF-8");
        let mut one: Vec<String> = first.clone();
        one.extend(text[..rotated_at].lines().map(str::to_owned));
        let two: Vec<String> = text[rotated_at..].lines().map(str::to_owned).collect();
        let summary = intact(&[one.clone(), two.clone()], &options(&[KEY]));
        assert_eq!((summary.files, summary.starts, summary.requests), (2, 2, 6));
        assert!(summary.notes.is_empty(), "{summary}");
        // The second segment alone continues an earlier one.
        assert_eq!(finding(std::slice::from_ref(&two), &Options::default()).problem, Problem::NoGenesis);
        let summary = intact(std::slice::from_ref(&two), &Options { continued: true, ..Options::default() });
        assert!(summary.notes[0].contains("continuing earlier files"), "{summary}");
        // Segments given out of order.
        let found = finding(&[two, one], &Options::default());
        assert_eq!((found.at.line, &found.problem), (1, &Problem::NoGenesis), "{found}");
    }

    #[test]
    fn a_new_chain_is_accepted_after_a_closed_one_or_at_the_top_of_a_file_only() {
        let first = log(2, None);
        let second = log(2, None);
        // stdout collected into one file: a new process's chain after a closed one.
        let joined: Vec<String> = first.iter().chain(second.iter()).cloned().collect();
        assert_eq!(intact(&[joined], &Options::default()).starts, 2);
        // After a crash (no final checkpoint) in the middle of a file: lines were replaced.
        let crashed: Vec<String> = first[..first.len() - 1].iter().chain(second.iter()).cloned().collect();
        let found = finding(std::slice::from_ref(&crashed), &Options::default());
        assert_eq!((found.at.line, &found.problem), (4, &Problem::RestartMidFile), "{found}");
        // ...but at the top of a new file it is a crash, noted.
        let summary = intact(&[first[..first.len() - 1].to_vec(), second], &Options::default());
        assert!(summary.notes[0].contains("ends without a final checkpoint"), "{summary}");
    }

    #[test]
    fn a_restart_after_a_crash_is_noted() {
        let lines = log(2, None);
        let crashed = &lines[..lines.len() - 1];
        let mut chain = Chain::resume(crashed.last().expect("lines").as_bytes()).expect("resumes");
        let mut out = Vec::new();
        chain.start(&mut out, Timestamp::UNIX_EPOCH, &facts(None));
        chain.checkpoint(&mut out, Timestamp::UNIX_EPOCH, true, None);
        let mut all = crashed.to_vec();
        all.extend(String::from_utf8(out).expect("UTF-8").lines().map(str::to_owned));
        let summary = intact(std::slice::from_ref(&all), &Options::default());
        assert!(summary.notes[0].contains("restarted after seq 2 without a final checkpoint"), "{summary}");
        let found = finding(&[all], &Options { require_final: true, ..Options::default() });
        assert_eq!((found.at.line, &found.problem), (3, &Problem::NotClosed), "{found}");
    }

    #[test]
    fn an_incomplete_last_line_is_noted_but_not_one_in_the_middle() {
        let lines = log(2, None);
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let cut = format!("{text}{{\"sluice_audit\":1,\"ty");
        let verdict = verify(vec![("a".to_owned(), std::io::Cursor::new(cut))], &Options::default()).expect("reads");
        let Verdict::Intact(summary) = verdict else { panic!("{verdict}") };
        assert!(summary.notes[0].contains("incomplete"), "{summary}");
        // The same cut at the end of a file that other files follow.
        let unended = text[..text.len() - 1].to_owned();
        let verdict = verify(
            vec![("a".to_owned(), std::io::Cursor::new(unended)), ("b".to_owned(), std::io::Cursor::new(text))],
            &Options::default(),
        )
        .expect("reads");
        let Verdict::Tampered(found) = verdict else { panic!("{verdict}") };
        assert_eq!((found.at.to_string(), &found.problem), ("a:4".to_owned(), &Problem::Incomplete), "{found}");
    }

    #[test]
    fn an_empty_log_is_not_intact() {
        let verdict = verify(vec![("a".to_owned(), std::io::Cursor::new(""))], &Options::default()).expect("reads");
        assert!(matches!(verdict, Verdict::Tampered(Finding { problem: Problem::Empty, .. })), "{verdict}");
    }

    #[test]
    fn a_changed_seq_is_named() {
        let mut lines = log(4, None);
        lines[2] = lines[2].replace("\"seq\":2", "\"seq\":9");
        let found = finding(&[lines], &Options::default());
        assert_eq!(found.at.line, 3, "{found}");
        assert_eq!(found.problem, Problem::SeqChanged { found: 9, expected: 2 });
    }
}
