//! The local tamper-evident audit log: JSON lines, one file per class per day, each record
//! chained to the one before it.
//!
//! Each line is a JSON object with the record's fields plus `seq` (0, 1, 2, … within the file),
//! `prev` (the previous line's `hash`, 64 zeros for the first) and `chain` (`sha256`, or
//! `hmac-sha256` when an audit key is set), and ends with `"hash":"<hex>"}`: the SHA-256 (or
//! HMAC-SHA256 under the key) of the line up to that field, closed with `}`. Editing, removing,
//! inserting or reordering a record breaks a hash, a `seq` or a `prev`, and [`verify`] names
//! the first record where it happened. Without a key, someone who can rewrite the whole file can
//! recompute the chain; with one, they need the key.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::{hex, AuditClass, AuditRecord};

/// When the local log reaches the disk (the OS's page cache; `fsync` is left to the OS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditFlush {
    /// After every record: a crash loses nothing that was written.
    EachRecord,
    /// After `max_records`, or `max_delay` after the first unflushed record, whichever comes
    /// first: a crash loses at most that much.
    Batched {
        /// Most records held.
        max_records: usize,
        /// Longest a record waits.
        max_delay: Duration,
    },
}

impl Default for AuditFlush {
    fn default() -> Self {
        Self::Batched {
            max_records: 64,
            max_delay: Duration::from_millis(200),
        }
    }
}

/// Where and how the local log is written.
#[derive(Clone)]
#[must_use]
pub struct FileSettings {
    pub(crate) dir: PathBuf,
    pub(crate) flush: AuditFlush,
    pub(crate) clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
}

impl fmt::Debug for FileSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSettings")
            .field("dir", &self.dir)
            .field("flush", &self.flush)
            .finish_non_exhaustive()
    }
}

impl FileSettings {
    /// Files in `dir` (created if missing), flushed in batches, pruned by the system clock.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            flush: AuditFlush::default(),
            clock: Arc::new(SystemTime::now),
        }
    }

    /// The flush policy.
    pub fn flush(mut self, flush: AuditFlush) -> Self {
        self.flush = flush;
        self
    }

    /// The clock pruning uses (tests move it forward by months).
    pub fn clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn day_of(t: SystemTime) -> i64 {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    secs.div_euclid(86_400)
}

fn date_of_day(day: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs((day.max(0) as u64) * 86_400);
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_owned()
}

fn day_of_date(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(&format!("{s}T00:00:00Z")).ok()?;
    Some(day_of(t))
}

fn file_name(class: AuditClass, day: i64) -> String {
    format!("{}-{}.jsonl", class.as_str(), date_of_day(day))
}

/// `(class, day)` of a log file's name.
fn parse_name(name: &str) -> Option<(AuditClass, i64)> {
    let stem = name.strip_suffix(".jsonl")?;
    AuditClass::ALL.into_iter().find_map(|c| {
        let date = stem.strip_prefix(c.as_str())?.strip_prefix('-')?;
        Some((c, day_of_date(date)?))
    })
}

fn chain_hash(key: Option<&[u8]>, data: &[u8]) -> String {
    match key {
        Some(k) => {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(k)
                .expect("HMAC takes keys of any length");
            mac.update(data);
            hex(&mac.finalize().into_bytes())
        }
        None => hex(&Sha256::digest(data)),
    }
}

struct OpenFile {
    day: i64,
    w: BufWriter<File>,
    seq: u64,
    last: String,
}

/// Writes records to the day's file of their class. Used by the audit worker only.
pub(crate) struct Writer {
    s: FileSettings,
    key: Option<Vec<u8>>,
    files: [Option<OpenFile>; 2],
    pending: usize,
    first_pending: Option<Instant>,
    pruned_day: i64,
}

impl Writer {
    pub(crate) fn open(s: FileSettings, key: Option<Vec<u8>>) -> std::io::Result<Self> {
        fs::create_dir_all(&s.dir)?;
        let mut w = Self {
            s,
            key,
            files: [None, None],
            pending: 0,
            first_pending: None,
            pruned_day: i64::MIN,
        };
        w.prune();
        Ok(w)
    }

    /// Deletes the files older than their class's retention, once a day.
    fn prune(&mut self) {
        let today = day_of((self.s.clock)());
        if today == self.pruned_day {
            return;
        }
        self.pruned_day = today;
        let Ok(entries) = fs::read_dir(&self.s.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some((class, day)) = name.to_str().and_then(parse_name) else {
                continue;
            };
            if day < today - i64::from(class.retention_days()) {
                match fs::remove_file(e.path()) {
                    Ok(()) => {
                        tracing::info!(file = %e.path().display(), "authwatch: audit file past retention removed")
                    }
                    Err(err) => {
                        tracing::warn!(file = %e.path().display(), %err, "authwatch: could not remove an audit file past retention")
                    }
                }
            }
        }
    }

    fn file(&mut self, class: AuditClass, day: i64) -> std::io::Result<&mut OpenFile> {
        let slot = &mut self.files[class as usize];
        if slot.as_ref().is_none_or(|f| f.day != day) {
            if let Some(f) = slot.as_mut() {
                f.w.flush()?;
            }
            *slot = Some(open_for_append(
                &self.s.dir.join(file_name(class, day)),
                day,
            )?);
        }
        Ok(slot.as_mut().expect("just opened"))
    }

    pub(crate) fn write(&mut self, r: &AuditRecord) {
        self.prune();
        if let Err(e) = self.try_write(r) {
            tracing::error!(error = %e, dir = %self.s.dir.display(), "authwatch: could not write the audit log");
        }
    }

    fn try_write(&mut self, r: &AuditRecord) -> std::io::Result<()> {
        let mut v = serde_json::to_value(r).map_err(std::io::Error::other)?;
        let chain = if self.key.is_some() {
            "hmac-sha256"
        } else {
            "sha256"
        };
        let key = self.key.clone();
        let f = self.file(r.class, day_of(r.time))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("seq".into(), f.seq.into());
            o.insert("prev".into(), f.last.clone().into());
            o.insert("chain".into(), chain.into());
        }
        let body = serde_json::to_string(&v).map_err(std::io::Error::other)?;
        let hash = chain_hash(key.as_deref(), body.as_bytes());
        // `{…}` becomes `{…,"hash":"…"}`: what was hashed is the line up to `,"hash"`, closed.
        let line = format!("{},\"hash\":\"{hash}\"}}\n", &body[..body.len() - 1]);
        f.w.write_all(line.as_bytes())?;
        f.seq += 1;
        f.last = hash;
        self.pending += 1;
        self.first_pending.get_or_insert_with(Instant::now);
        match self.s.flush {
            AuditFlush::EachRecord => self.flush(),
            AuditFlush::Batched { max_records, .. } if self.pending >= max_records => self.flush(),
            AuditFlush::Batched { .. } => {}
        }
        Ok(())
    }

    /// How long until the batched policy wants a flush; `None` when nothing waits.
    pub(crate) fn flush_due_in(&self) -> Option<Duration> {
        let first = self.first_pending?;
        let max = match self.s.flush {
            AuditFlush::Batched { max_delay, .. } => max_delay,
            AuditFlush::EachRecord => Duration::ZERO,
        };
        Some(max.saturating_sub(first.elapsed()))
    }

    pub(crate) fn flush(&mut self) {
        for f in self.files.iter_mut().flatten() {
            if let Err(e) = f.w.flush() {
                tracing::error!(error = %e, "authwatch: could not flush the audit log");
            }
        }
        self.pending = 0;
        self.first_pending = None;
    }
}

/// Opens a day's file for appending, carrying on its chain. A torn last line (a crash in the
/// middle of a write) is cut off first, so the chain stays verifiable.
fn open_for_append(path: &Path, day: i64) -> std::io::Result<OpenFile> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    if complete < text.len() {
        tracing::warn!(file = %path.display(), bytes = text.len() - complete, "authwatch: cut a torn last audit record");
        file.set_len(complete as u64)?;
        file.seek(SeekFrom::End(0))?;
    }
    let (mut seq, mut last) = (0, ZERO.to_owned());
    if let Some(line) = text[..complete].lines().last() {
        if let Some((s, h)) = seq_and_hash(line) {
            seq = s + 1;
            last = h;
        }
    }
    Ok(OpenFile {
        day,
        w: BufWriter::new(file),
        seq,
        last,
    })
}

fn seq_and_hash(line: &str) -> Option<(u64, String)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some((v["seq"].as_u64()?, v["hash"].as_str()?.to_owned()))
}

/// What was tampered with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tamper {
    /// The record's content does not match its hash.
    Edited,
    /// Records before this one are missing (its `seq` jumps).
    Removed,
    /// A record that does not belong to the chain (a repeated `seq`, or a `prev` that is not
    /// the previous record's hash).
    Inserted,
    /// Records are out of order.
    Reordered,
    /// The line is not a record of this log.
    Malformed,
    /// The chain is keyed and no key (or the wrong one) was given.
    WrongKey,
}

/// The first bad record [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {kind:?}: {detail}", file.display())]
#[non_exhaustive]
pub struct VerifyError {
    /// The file.
    pub file: PathBuf,
    /// The line (from 1).
    pub line: usize,
    /// What happened.
    pub kind: Tamper,
    /// In words.
    pub detail: String,
}

/// What [`verify`] checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Files checked.
    pub files: usize,
    /// Records whose chain holds.
    pub records: usize,
    /// Files whose last line was cut by a crash mid-write (the records before it verify).
    pub torn: Vec<PathBuf>,
}

/// Checks a log file, or every log file in a folder: every record's hash, `seq` and `prev`.
/// `key` is the audit key when the log was written with one.
///
/// # Errors
///
/// The first record that was edited, removed, inserted or reordered (or an I/O error, as
/// [`Tamper::Malformed`]).
pub fn verify(path: &Path, key: Option<&[u8]>) -> Result<VerifyReport, VerifyError> {
    let io = |e: std::io::Error| VerifyError {
        file: path.to_owned(),
        line: 0,
        kind: Tamper::Malformed,
        detail: e.to_string(),
    };
    let mut files: Vec<PathBuf> = if path.is_dir() {
        fs::read_dir(path)
            .map_err(io)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect()
    } else {
        vec![path.to_owned()]
    };
    files.sort();
    let mut report = VerifyReport::default();
    for f in files {
        verify_file(&f, key, &mut report)?;
        report.files += 1;
    }
    Ok(report)
}

fn verify_file(
    path: &Path,
    key: Option<&[u8]>,
    report: &mut VerifyReport,
) -> Result<(), VerifyError> {
    let bad = |line: usize, kind: Tamper, detail: String| VerifyError {
        file: path.to_owned(),
        line,
        kind,
        detail,
    };
    let text = fs::read(path).map_err(|e| bad(0, Tamper::Malformed, e.to_string()))?;
    let text = String::from_utf8_lossy(&text);
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    if complete < text.len() {
        // A crash mid-write: the records before it stand.
        report.torn.push(path.to_owned());
    }
    // Parse every complete line first: telling a removal from a reordering needs the lines
    // after the first break.
    let mut recs = Vec::new();
    for (i, line) in text[..complete].lines().enumerate() {
        let n = i + 1;
        const TAIL: usize = ",\"hash\":\"\"}".len() + 64;
        let split = line.len().checked_sub(TAIL).filter(|i| {
            line.is_char_boundary(*i)
                && line[*i..].starts_with(",\"hash\":\"")
                && line.ends_with("\"}")
        });
        let Some(i) = split else {
            return Err(bad(
                n,
                Tamper::Malformed,
                "no hash at the end of the line".into(),
            ));
        };
        let body = format!("{}}}", &line[..i]);
        let hash = line[i + ",\"hash\":\"".len()..line.len() - 2].to_owned();
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| bad(n, Tamper::Malformed, format!("not JSON: {e}")))?;
        let seq = v["seq"]
            .as_u64()
            .ok_or_else(|| bad(n, Tamper::Malformed, "no seq".into()))?;
        let prev = v["prev"].as_str().unwrap_or_default().to_owned();
        let keyed = v["chain"] == "hmac-sha256";
        recs.push((n, body, hash, seq, prev, keyed));
    }
    let (mut expected, mut last) = (0u64, ZERO.to_owned());
    for (idx, (n, body, hash, seq, prev, keyed)) in recs.iter().enumerate() {
        let n = *n;
        if *keyed && key.is_none() {
            return Err(bad(
                n,
                Tamper::WrongKey,
                "the chain is keyed: give the audit key".into(),
            ));
        }
        if chain_hash(if *keyed { key } else { None }, body.as_bytes()) != *hash {
            let detail = if *keyed {
                "the record does not match its hash (edited, or not the key it was written with)"
            } else {
                "the record does not match its hash"
            };
            return Err(bad(n, Tamper::Edited, detail.into()));
        }
        if *seq > expected {
            let later = recs[idx + 1..].iter().any(|r| r.3 == expected);
            return Err(if later {
                bad(
                    n,
                    Tamper::Reordered,
                    format!("record {seq} before record {expected}"),
                )
            } else {
                bad(
                    n,
                    Tamper::Removed,
                    format!("records {expected}..{seq} are missing"),
                )
            });
        }
        if *seq < expected {
            let seen_before = recs[..idx].iter().any(|r| r.3 == *seq);
            return Err(if seen_before {
                bad(n, Tamper::Inserted, format!("a second record {seq}"))
            } else {
                bad(
                    n,
                    Tamper::Reordered,
                    format!("record {seq} after record {}", expected - 1),
                )
            });
        }
        if *prev != last {
            return Err(bad(
                n,
                Tamper::Inserted,
                "prev is not the previous record's hash".into(),
            ));
        }
        expected = seq + 1;
        last = hash.clone();
        report.records += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_days() {
        let day = day_of(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_868_815));
        assert_eq!(date_of_day(day), "2026-11-28");
        assert_eq!(
            file_name(AuditClass::Security, day),
            "security-2026-11-28.jsonl"
        );
        assert_eq!(
            parse_name("security-2026-11-28.jsonl"),
            Some((AuditClass::Security, day))
        );
        assert_eq!(
            parse_name("authentication-2026-11-28.jsonl"),
            Some((AuditClass::Authentication, day))
        );
        assert_eq!(parse_name("notes.txt"), None);
    }
}
