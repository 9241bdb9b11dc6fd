//! The local tamper-evident audit log: JSON lines, one file per class per day, each record
//! chained to the one before it.
//!
//! Each line is a JSON object with the record's fields plus `seq` (0, 1, 2, … within the file),
//! `prev` (the previous line's `hash`; for a file's first line, the last `hash` of the class's
//! previous file, or 64 zeros), `chain` (`sha256`, or `hmac-sha256` when an audit key is set)
//! and, when keyed, `key_id`; it ends with `"hash":"<hex>"}`: the SHA-256 (or HMAC-SHA256 under
//! a key derived from the audit key) of the line up to that field, closed with `}`.
//!
//! Editing, removing, inserting or reordering a record, or removing a day's file between two
//! others, breaks a hash, a `seq` or a `prev`, and [`verify`] names the first record where it
//! happened. What the files alone cannot show: records cut off the end of the newest file (or
//! that whole file), which looks like a crash before they were written, and the oldest file's
//! removal, which looks like pruning. Without a key, someone who can rewrite whole files can
//! recompute the chain; with one, they need the key, and [`verify`] given the key refuses
//! unkeyed records. One writer per folder.
//!
//! **Seals**: when a class's next day starts (or a writer starts on a later day than the
//! class's last file), the day's file ends with a [`SEAL_RECORD`] holding its record count and
//! the SHA-256 of its bytes, chained like any record; the next day's first record follows the
//! seal. [`verify`] fails on a day's file that ends without its seal (except the newest) or
//! whose seal does not match, naming the file.
//!
//! **Checkpoints** close the first gap. At every flush the writer records, per class, its
//! newest file, how many records it holds and the hash of the last, signed (HMAC under a key
//! derived from the audit key, or a plain SHA-256 without one), in `checkpoints.json` (the
//! latest per class, replaced atomically); with OTLP logs on they also go to the collector as
//! `auth.audit.checkpoint` records (at most one per class every 10 s, and the last at
//! shutdown), out of the host's reach. [`verify`] then reports a file shorter than its
//! checkpoint, with the number of records missing, or a file the checkpoint names that is
//! gone; [`verify_with_checkpoints`] does the same against an external copy. What remains: an
//! attacker with root and the key can rewrite history and sign new checkpoints; without the
//! key, the local checkpoint can be rolled back to an older one. The copy at the collector is
//! the defence against both.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::sanitize::hex;
use super::{AuditClass, AuditRecord};

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
    /// age recipients (`age1…`) the records are encrypted to; none: plain JSON.
    pub(crate) recipients: Vec<String>,
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
            recipients: Vec::new(),
        }
    }

    /// Encrypts each record to these age recipients (X25519, `age1…`: `age-keygen -y
    /// key.txt`), so the service can write its log but not read it back; `authwatch audit
    /// cat|verify --identity key.txt` reads it. The chain stays verifiable without the
    /// identity: each line keeps its time and class in clear (for the day and class checks),
    /// and its hash covers the ciphertext. To rotate keys, start the service with the new
    /// recipients: the records from then on are encrypted to them, older ones keep theirs (keep
    /// the old identities for as long as the retention). An invalid recipient fails the build.
    pub fn encrypt_to<I, S>(mut self, recipients: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.recipients = recipients.into_iter().map(Into::into).collect();
        self
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

/// The key a purpose uses, derived from the audit key (so a user-id hash can never be a valid
/// chain hash, and the other way round).
pub(crate) fn derive(key: &[u8], purpose: &str) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("authwatch/{purpose}/v1").as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn key_id(chain_key: &[u8]) -> String {
    chain_hash(Some(chain_key), b"key-id")[..16].to_owned()
}

fn day_of(t: SystemTime) -> i64 {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    secs.div_euclid(86_400)
}

fn date_of_day(day: i64) -> String {
    // Days outside 1970..=9999 (a broken clock) clamp rather than fail.
    let day = day.clamp(0, 2_932_896);
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(day as u64 * 86_400);
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

/// A line split into what was hashed and its hash.
fn split_line(line: &str) -> Option<(String, &str)> {
    const TAIL: usize = ",\"hash\":\"\"}".len() + 64;
    let i = line.len().checked_sub(TAIL)?;
    if !(line.is_char_boundary(i) && line[i..].starts_with(",\"hash\":\"") && line.ends_with("\"}"))
    {
        return None;
    }
    let hash = &line[i + ",\"hash\":\"".len()..line.len() - 2];
    hash.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| (format!("{}}}", &line[..i]), hash))
}

/// The security class's files in `dir`, oldest first (the incident report and the access
/// summary read them).
pub(crate) fn security_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(files_of(dir)?
        .into_iter()
        .filter(|(c, ..)| *c == AuditClass::Security)
        .map(|(.., p)| p)
        .collect())
}

fn files_of(dir: &Path) -> std::io::Result<Vec<(AuditClass, i64, PathBuf)>> {
    let mut v: Vec<_> = fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let (c, d) = parse_name(e.file_name().to_str()?)?;
            Some((c, d, e.path()))
        })
        .collect();
    v.sort_by_key(|(c, d, _)| (c.as_str(), *d));
    Ok(v)
}

/// The end of a file: its length up to the last newline, and the last complete line. Reads
/// backwards in 64 KiB steps, so a large file costs one step.
fn tail_of(file: &mut File) -> std::io::Result<(u64, Option<String>)> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut end = len;
    let mut complete = None;
    let mut buf = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(64 * 1024);
        let mut chunk = vec![0; (end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        let nl: Vec<usize> = buf
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        if complete.is_none() {
            if let Some(&last) = nl.last() {
                complete = Some(start + last as u64 + 1);
            }
        }
        if let Some(&last) = nl.last() {
            // The line before the last newline starts after the one before it (or at 0).
            let before = nl.iter().rev().nth(1).map(|i| i + 1);
            if before.is_some() || start == 0 {
                let from = before.unwrap_or(0);
                let line = String::from_utf8_lossy(&buf[from..last]).into_owned();
                return Ok((complete.unwrap_or(0), Some(line)));
            }
        }
        if len - start > 4 * 1024 * 1024 {
            break; // no line is that long
        }
        end = start;
    }
    Ok((complete.unwrap_or(0), None))
}

struct OpenFile {
    class: AuditClass,
    day: i64,
    w: BufWriter<File>,
    seq: u64,
    last: String,
    /// The records the last checkpoint of this file counted.
    checkpointed: u64,
}

/// The file of the latest checkpoint of each class, in the audit folder.
pub const CHECKPOINT_FILE: &str = "checkpoints.json";

/// How often a class's checkpoint goes to the collector at most (the file has every one).
const CHECKPOINT_EXPORT_EVERY: Duration = Duration::from_secs(10);

/// One class's state at a flush: its newest file, the records it holds, the hash of the last;
/// signed with `mac` (HMAC-SHA256 under a key derived from the audit key, or SHA-256 without
/// one) over the other fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Checkpoint {
    /// `authentication`, `security`, …
    pub class: String,
    /// The file's name.
    pub file: String,
    /// Records in it.
    pub records: u64,
    /// The hash of its last record.
    pub head: String,
    /// When (RFC 3339).
    pub time: String,
    /// `sha256` or `hmac-sha256`.
    pub chain: String,
    /// The key's id, when keyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The signature.
    pub mac: String,
}

impl Checkpoint {
    fn text(&self) -> String {
        format!(
            "authwatch-checkpoint/v1|{}|{}|{}|{}|{}|{}|{}",
            self.class,
            self.file,
            self.records,
            self.head,
            self.time,
            self.chain,
            self.key_id.as_deref().unwrap_or("")
        )
    }

    /// Whether the signature holds (under `checkpoint_key` when keyed).
    fn holds(&self, checkpoint_key: Option<&[u8]>) -> bool {
        let keyed = self.chain == "hmac-sha256";
        if keyed != checkpoint_key.is_some() {
            return false;
        }
        chain_hash(checkpoint_key, self.text().as_bytes()) == self.mac
    }

    /// The checkpoints in `text`: `checkpoints.json` (one per line), or lines exported from
    /// a log store that hold one under `auth.audit.checkpoint` (an object or its JSON text).
    #[must_use]
    pub fn parse_all(text: &str) -> Vec<Self> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| {
                let c = match &v["auth.audit.checkpoint"] {
                    serde_json::Value::String(s) => serde_json::from_str(s).ok()?,
                    serde_json::Value::Object(_) => v["auth.audit.checkpoint"].clone(),
                    _ => v,
                };
                serde_json::from_value(c).ok()
            })
            .collect()
    }
}

/// Writes records to the day's file of their class. Used by the audit worker only.
pub(crate) struct Writer {
    s: FileSettings,
    chain_key: Option<Vec<u8>>,
    key_id: Option<String>,
    /// The file being written, one per class.
    files: Vec<OpenFile>,
    pending: usize,
    first_pending: Option<Instant>,
    pruned_day: i64,
    checkpoint_key: Option<Vec<u8>>,
    /// The latest checkpoint of each class (those of `checkpoints.json` at start included).
    checkpoints: std::collections::BTreeMap<String, Checkpoint>,
    /// Prune records waiting for the next record of their class.
    prune_notes: Vec<(AuditClass, serde_json::Value)>,
    /// The age recipients records are encrypted to (none: plain).
    recipients: Vec<age::x25519::Recipient>,
    /// Checkpoints for the collector, and when each class's last went.
    to_export: Vec<Checkpoint>,
    exported: std::collections::HashMap<String, Instant>,
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

impl Writer {
    pub(crate) fn open(s: FileSettings, key: Option<Vec<u8>>) -> std::io::Result<Self> {
        create_dir(&s.dir)?;
        let recipients = s
            .recipients
            .iter()
            .map(|r| {
                r.trim().parse::<age::x25519::Recipient>().map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("{r:?} is not an age X25519 recipient (age1…): {e}"),
                    )
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let chain_key = key.as_ref().map(|k| derive(k, "chain"));
        let checkpoints = fs::read_to_string(s.dir.join(CHECKPOINT_FILE))
            .map(|t| {
                Checkpoint::parse_all(&t)
                    .into_iter()
                    .map(|c| (c.class.clone(), c))
                    .collect()
            })
            .unwrap_or_default();
        let mut w = Self {
            key_id: chain_key.as_deref().map(key_id),
            s,
            chain_key,
            files: Vec::new(),
            pending: 0,
            first_pending: None,
            pruned_day: i64::MIN,
            checkpoint_key: key.map(|k| derive(&k, "checkpoint")),
            checkpoints,
            prune_notes: Vec::new(),
            recipients,
            to_export: Vec::new(),
            exported: std::collections::HashMap::new(),
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
        let Ok(files) = files_of(&self.s.dir) else {
            return;
        };
        for (class, day, path) in files {
            // A file this writer has open is today's (or was, a moment ago): never pruned here.
            if self.files.iter().any(|f| f.class == class && f.day == day) {
                continue;
            }
            if day < today - i64::from(class.retention_days()) {
                // Only a whole sealed day (or an empty file): its seal's hash goes into a
                // record of the class, so that the day after it, now the oldest, shows it
                // was pruned rather than deleted.
                let Some(sealed) = sealed_as(&path) else {
                    tracing::warn!(file = %path.display(), "authwatch: an audit file past retention is not sealed; kept until it is");
                    continue;
                };
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), "authwatch: audit file past retention removed");
                        if let Some((seal_hash, records)) = sealed {
                            self.prune_notes.push((
                                class,
                                serde_json::json!({
                                    "event.name": PRUNE_RECORD,
                                    "audit.class": class.as_str(),
                                    "audit.source": "authwatch",
                                    "audit.pruned": {
                                        "file": file_name(class, day),
                                        "records": records,
                                        "seal": seal_hash,
                                        "retention_days": class.retention_days(),
                                    },
                                }),
                            ));
                        }
                        // A checkpoint of a pruned file no longer holds anything to check.
                        let name = file_name(class, day);
                        let before = self.checkpoints.len();
                        self.checkpoints.retain(|_, c| c.file != name);
                        if self.checkpoints.len() != before {
                            let _ = self.write_checkpoints();
                        }
                    }
                    Err(err) => {
                        tracing::warn!(file = %path.display(), %err, "authwatch: could not remove an audit file past retention")
                    }
                }
            }
        }
    }

    /// The file a record of `class` goes to now: today's (by the writer's clock), never an
    /// earlier day's once a later one is open, so each file's chain continues the one before
    /// and a record queued across midnight lands in the new day's file.
    fn file(&mut self, class: AuditClass) -> std::io::Result<&mut OpenFile> {
        let today = day_of((self.s.clock)());
        let i = self.files.iter().position(|f| f.class == class);
        let day = i.map_or(today, |i| today.max(self.files[i].day));
        match i {
            Some(i) if self.files[i].day == day => Ok(&mut self.files[i]),
            _ => {
                let now = (self.s.clock)();
                let (key, kid) = (self.chain_key.clone(), self.key_id.clone());
                // The day that is over gets its seal before the new day's file starts, so the
                // new file's first record follows the seal.
                let mut old = match i {
                    Some(i) => Some(self.files.swap_remove(i)),
                    // Started on a later day than the class's last file (a restart): that file
                    // is sealed now, unless it is.
                    None => latest_before(&self.s.dir, class, day)
                        .map(|d| open_for_append(&self.s.dir, class, d))
                        .transpose()?,
                };
                if let Some(old) = &mut old {
                    seal(&self.s.dir, old, key.as_deref(), kid.as_deref(), now)?;
                }
                self.files.push(open_for_append(&self.s.dir, class, day)?);
                Ok(self.files.last_mut().expect("just pushed"))
            }
        }
    }

    pub(crate) fn write(&mut self, r: &AuditRecord) {
        self.prune();
        if let Err(e) = self.try_write(r) {
            tracing::error!(error = %e, dir = %self.s.dir.display(), "authwatch: could not write the audit log");
        }
    }

    fn try_write(&mut self, r: &AuditRecord) -> std::io::Result<()> {
        let mut v = serde_json::to_value(r).map_err(std::io::Error::other)?;
        if !self.recipients.is_empty() {
            v = encrypt(&self.recipients, &v)?;
        }
        let (key, kid) = (self.chain_key.clone(), self.key_id.clone());
        let now = (self.s.clock)();
        let notes: Vec<serde_json::Value> = {
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.prune_notes)
                .into_iter()
                .partition(|(c, _)| *c == r.class);
            self.prune_notes = rest;
            mine.into_iter().map(|(_, v)| v).collect()
        };
        let f = self.file(r.class)?;
        // The prunes of the class first, each a record of its own.
        for mut note in notes {
            note["time"] = humantime::format_rfc3339_nanos(now).to_string().into();
            append(f, note, key.as_deref(), kid.as_deref())?;
        }
        append(f, v, key.as_deref(), kid.as_deref())?;
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
        // Prune records with no record of their class to go before: written now.
        if !self.prune_notes.is_empty() {
            let (key, kid) = (self.chain_key.clone(), self.key_id.clone());
            let now = (self.s.clock)();
            for (class, mut note) in std::mem::take(&mut self.prune_notes) {
                note["time"] = humantime::format_rfc3339_nanos(now).to_string().into();
                let done = self
                    .file(class)
                    .and_then(|f| append(f, note, key.as_deref(), kid.as_deref()));
                if let Err(e) = done {
                    tracing::error!(error = %e, "authwatch: could not write an audit prune record");
                }
            }
        }
        for f in &mut self.files {
            if let Err(e) = f.w.flush() {
                tracing::error!(error = %e, "authwatch: could not flush the audit log");
            }
        }
        self.pending = 0;
        self.first_pending = None;
        self.checkpoint();
    }

    /// A checkpoint of each file written to since the last, in `checkpoints.json` (replaced
    /// atomically), and queued for the collector (at most one per class every 10 s).
    fn checkpoint(&mut self) {
        let now = (self.s.clock)();
        let mut changed = false;
        for f in &mut self.files {
            if f.seq == f.checkpointed {
                continue;
            }
            f.checkpointed = f.seq;
            let mut c = Checkpoint {
                class: f.class.as_str().to_owned(),
                file: file_name(f.class, f.day),
                records: f.seq,
                head: f.last.clone(),
                time: humantime::format_rfc3339_millis(now).to_string(),
                chain: if self.checkpoint_key.is_some() {
                    "hmac-sha256".into()
                } else {
                    "sha256".into()
                },
                key_id: self.key_id.clone(),
                mac: String::new(),
            };
            c.mac = chain_hash(self.checkpoint_key.as_deref(), c.text().as_bytes());
            // For the collector: only the newest of a class waits.
            self.to_export.retain(|x| x.class != c.class);
            self.to_export.push(c.clone());
            self.checkpoints.insert(c.class.clone(), c);
            changed = true;
        }
        if changed {
            if let Err(e) = self.write_checkpoints() {
                tracing::error!(error = %e, dir = %self.s.dir.display(), "authwatch: could not write the audit checkpoints");
            }
        }
    }

    fn write_checkpoints(&self) -> std::io::Result<()> {
        let mut text = String::new();
        for c in self.checkpoints.values() {
            text.push_str(&serde_json::to_string(c).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        let tmp = self.s.dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        let mut o = OpenOptions::new();
        o.create(true).write(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.flush()?;
        drop(f);
        fs::rename(&tmp, self.s.dir.join(CHECKPOINT_FILE))
    }

    /// The checkpoints due for the collector (`all`: every one waiting, at shutdown).
    pub(crate) fn take_checkpoints(&mut self, all: bool) -> Vec<Checkpoint> {
        let now = Instant::now();
        let (due, wait): (Vec<Checkpoint>, Vec<Checkpoint>) = std::mem::take(&mut self.to_export)
            .into_iter()
            .partition(|c| {
                all || self
                    .exported
                    .get(&c.class)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= CHECKPOINT_EXPORT_EVERY)
            });
        for c in &due {
            self.exported.insert(c.class.clone(), now);
        }
        self.to_export = wait;
        due
    }
}

/// Appends `v` to `f` as the next record of its chain: `seq`, `prev`, `chain`, `key_id`, and
/// the hash of the line up to there.
fn append(
    f: &mut OpenFile,
    mut v: serde_json::Value,
    key: Option<&[u8]>,
    kid: Option<&str>,
) -> std::io::Result<()> {
    if let Some(o) = v.as_object_mut() {
        o.insert("seq".into(), f.seq.into());
        o.insert("prev".into(), f.last.clone().into());
        o.insert(
            "chain".into(),
            if key.is_some() {
                "hmac-sha256"
            } else {
                "sha256"
            }
            .into(),
        );
        if let Some(k) = kid {
            o.insert("key_id".into(), k.into());
        }
    }
    let body = serde_json::to_string(&v).map_err(std::io::Error::other)?;
    let hash = chain_hash(key, body.as_bytes());
    // `{…}` becomes `{…,"hash":"…"}`: what was hashed is the line up to `,"hash"`, closed.
    let line = format!("{},\"hash\":\"{hash}\"}}\n", &body[..body.len() - 1]);
    f.w.write_all(line.as_bytes())?;
    f.seq += 1;
    f.last = hash;
    Ok(())
}

/// `record` as an encrypted line's content: its time and class in clear (the chain's day and
/// class checks need them), the rest in `age`, the record's JSON encrypted to `recipients`
/// (base64 of the binary age file).
fn encrypt(
    recipients: &[age::x25519::Recipient],
    record: &serde_json::Value,
) -> std::io::Result<serde_json::Value> {
    use base64::Engine as _;
    let plain = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    let enc = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(std::io::Error::other)?;
    let mut ct = Vec::with_capacity(plain.len() + 256);
    let mut w = enc.wrap_output(&mut ct)?;
    w.write_all(&plain)?;
    w.finish()?;
    Ok(serde_json::json!({
        "time": record["time"],
        "audit.class": record["audit.class"],
        "age": base64::engine::general_purpose::STANDARD.encode(&ct),
    }))
}

/// The identities (`AGE-SECRET-KEY-1…` lines, as `age-keygen` writes them) that read an
/// encrypted log.
#[derive(Clone)]
pub struct Identities(Vec<age::x25519::Identity>);

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identities({})", self.0.len())
    }
}

impl Identities {
    /// Reads the identity file at `path` (comments and blank lines skipped).
    ///
    /// # Errors
    ///
    /// It cannot be read, or holds no identity or a malformed one.
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        Self::parse(&fs::read_to_string(path)?)
    }

    /// The identities in `text`.
    ///
    /// # Errors
    ///
    /// None, or a malformed one.
    pub fn parse(text: &str) -> std::io::Result<Self> {
        let ids = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
            .map(|l| {
                l.parse::<age::x25519::Identity>().map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        if ids.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no AGE-SECRET-KEY- line in it",
            ));
        }
        Ok(Self(ids))
    }

    /// The record an encrypted line holds; `None` when the line is not encrypted; an error
    /// when none of these identities opens it.
    ///
    /// # Errors
    ///
    /// Not for these identities, or not an age file.
    pub fn decrypt(&self, line: &str) -> Option<Result<serde_json::Value, String>> {
        use base64::Engine as _;
        let (body, _) = split_line(line)?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let ct = v["age"].as_str()?;
        Some((|| {
            let ct = base64::engine::general_purpose::STANDARD
                .decode(ct)
                .map_err(|e| format!("not base64: {e}"))?;
            let d = age::Decryptor::new(&ct[..]).map_err(|e| e.to_string())?;
            let mut r = d
                .decrypt(self.0.iter().map(|i| i as &dyn age::Identity))
                .map_err(|e| e.to_string())?;
            let mut plain = Vec::new();
            r.read_to_end(&mut plain).map_err(|e| e.to_string())?;
            let mut rec: serde_json::Value =
                serde_json::from_slice(&plain).map_err(|e| format!("not a record: {e}"))?;
            if rec["time"] != v["time"] || rec["audit.class"] != v["audit.class"] {
                return Err("the record does not match its line's time and class".to_owned());
            }
            if let Some(o) = rec.as_object_mut() {
                for k in ["seq", "prev", "chain", "key_id", "hash"] {
                    if let Some(x) = v.get(k) {
                        o.insert(k.into(), x.clone());
                    }
                }
                if let Some((_, h)) = split_line(line) {
                    o.insert("hash".into(), h.into());
                }
            }
            Ok(rec)
        })())
    }
}

/// [`verify`], then every encrypted record opened with `identities`: the records verify and
/// read. What needs the identity: only reading (the chain, the seals and the checkpoints hold
/// without it).
///
/// # Errors
///
/// As [`verify`]; [`Tamper::WrongKey`] for a record these identities cannot open.
pub fn verify_decrypting(
    path: &Path,
    key: Option<&[u8]>,
    identities: &Identities,
) -> Result<VerifyReport, VerifyError> {
    let mut report = verify(path, key)?;
    for (_, f) in log_files(path)? {
        let text = fs::read_to_string(&f).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            match identities.decrypt(line) {
                Some(Ok(_)) => report.decrypted += 1,
                Some(Err(e)) => {
                    return Err(VerifyError {
                        file: f.clone(),
                        line: i + 1,
                        kind: Tamper::WrongKey,
                        detail: format!("cannot decrypt: {e}"),
                    })
                }
                None => {}
            }
        }
    }
    Ok(report)
}

/// The name of the seal record that ends a day's file.
pub const SEAL_RECORD: &str = "auth.audit.seal";

/// The name of the record that says a sealed day was pruned (past its retention).
pub(crate) const PRUNE_RECORD: &str = "auth.audit.pruned";

/// Whether the file at `path` may be pruned: `Some(None)` when empty, `Some((seal hash,
/// records))` when it ends with its seal, `None` otherwise.
fn sealed_as(path: &Path) -> Option<Option<(String, u64)>> {
    let mut f = File::open(path).ok()?;
    let (_, last) = tail_of(&mut f).ok()?;
    let Some(last) = last else {
        return Some(None);
    };
    let (body, hash) = split_line(&last)?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    (v["event.name"] == SEAL_RECORD).then(|| {
        Some((
            hash.to_owned(),
            v["audit.seal"]["records"].as_u64().unwrap_or(0),
        ))
    })
}

/// Ends `f` (a day that is over) with its seal: the count of its records and the SHA-256 of
/// its bytes so far, chained like any record, so the next day's first record follows it.
/// Nothing when it is sealed already.
fn seal(
    dir: &Path,
    f: &mut OpenFile,
    key: Option<&[u8]>,
    kid: Option<&str>,
    now: SystemTime,
) -> std::io::Result<()> {
    f.w.flush()?;
    let path = dir.join(file_name(f.class, f.day));
    let bytes = fs::read(&path)?;
    if let Some(last) = split_lines(&bytes).0.last() {
        let last = String::from_utf8_lossy(last);
        if split_line(&last)
            .is_some_and(|(body, _)| body.contains(&format!("\"event.name\":\"{SEAL_RECORD}\"")))
        {
            return Ok(());
        }
    }
    let v = serde_json::json!({
        "event.name": SEAL_RECORD,
        "time": humantime::format_rfc3339_nanos(now).to_string(),
        "audit.class": f.class.as_str(),
        "audit.source": "authwatch",
        "audit.seal": {
            "records": f.seq,
            "sha256": hex(&Sha256::digest(&bytes)),
        },
    });
    append(f, v, key, kid)?;
    f.w.flush()
}

/// Opens a day's file for appending, carrying on its chain (or, for a new file, the chain of
/// the class's previous file). A torn last line (a crash in the middle of a write) is cut off
/// first, so the chain stays verifiable. Reads only the end of the file.
fn open_for_append(dir: &Path, class: AuditClass, day: i64) -> std::io::Result<OpenFile> {
    let path = dir.join(file_name(class, day));
    let mut o = OpenOptions::new();
    o.create(true).read(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut file = o.open(&path)?;
    let len = file.metadata()?.len();
    let (complete, last_line) = tail_of(&mut file)?;
    if complete < len {
        tracing::warn!(file = %path.display(), bytes = len - complete, "authwatch: cut a torn last audit record");
        file.set_len(complete)?;
    }
    file.seek(SeekFrom::End(0))?;
    let (seq, last) = match last_line {
        Some(line) => match seq_and_hash(&line) {
            Some((s, h)) => (s + 1, h),
            None => {
                tracing::error!(file = %path.display(), "authwatch: the last audit record is unreadable; the chain restarts (verify will show where)");
                (0, ZERO.to_owned())
            }
        },
        // A new file: chained to the last record of the class's previous file.
        None => (
            0,
            previous_hash(dir, class, day).unwrap_or_else(|| ZERO.to_owned()),
        ),
    };
    Ok(OpenFile {
        class,
        day,
        w: BufWriter::new(file),
        seq,
        last,
        checkpointed: seq,
    })
}

/// The day of the latest file of `class` before `day`.
fn latest_before(dir: &Path, class: AuditClass, day: i64) -> Option<i64> {
    files_of(dir)
        .ok()?
        .into_iter()
        .filter(|(c, d, _)| *c == class && *d < day)
        .map(|(_, d, _)| d)
        .max()
}

/// The last hash of the latest file of `class` before `day`.
fn previous_hash(dir: &Path, class: AuditClass, day: i64) -> Option<String> {
    let (_, _, path) = files_of(dir)
        .ok()?
        .into_iter()
        .filter(|(c, d, _)| *c == class && *d < day)
        .max_by_key(|(_, d, _)| *d)?;
    let mut f = File::open(path).ok()?;
    let (_, line) = tail_of(&mut f).ok()?;
    seq_and_hash(&line?).map(|(_, h)| h)
}

fn seq_and_hash(line: &str) -> Option<(u64, String)> {
    let (body, hash) = split_line(line)?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some((v["seq"].as_u64()?, hash.to_owned()))
}

/// What was tampered with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tamper {
    /// The record's content does not match its hash.
    Edited,
    /// Records before this one are missing (its `seq` jumps), or a day's file between two
    /// others is gone.
    Removed,
    /// A record that does not belong to the chain (a repeated `seq`, a `prev` that is not the
    /// previous record's hash, a record of another class or day).
    Inserted,
    /// Records are out of order.
    Reordered,
    /// The line is not a record of this log, or a torn record sits in a file that is not the
    /// newest of its class.
    Malformed,
    /// The chain is keyed and no key, or another key, was given; or a key was given and the
    /// record is not keyed.
    WrongKey,
    /// The file or folder cannot be read (not tampering).
    Unreadable,
    /// The log is shorter than its last checkpoint: records cut off the end of a file, or a
    /// file the checkpoint names is gone.
    Truncated,
    /// A checkpoint whose signature does not hold (forged, edited, or made with another key).
    ForgedCheckpoint,
}

/// The first bad record [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {kind:?}: {detail}", file.display())]
#[non_exhaustive]
pub struct VerifyError {
    /// The file.
    pub file: PathBuf,
    /// The line (from 1; 0 for the file as a whole).
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
    /// Files whose last line was cut by a crash mid-write (the records before it verify); only
    /// ever the newest file of a class.
    pub torn: Vec<PathBuf>,
    /// Checkpoints the log was checked against (one per class).
    pub checkpoints: usize,
    /// Day files that end with their seal.
    pub sealed: usize,
    /// Encrypted records opened with the identity ([`verify_decrypting`]).
    pub decrypted: usize,
}

/// Checks a log file, or every log file in a folder (each class's files in date order, each
/// chained to the one before): every record's hash, `seq`, `prev`, class and day. `key` is the
/// audit key when the log was written with one.
///
/// # Errors
///
/// The first record that was edited, removed, inserted or reordered; [`Tamper::Unreadable`]
/// when the path cannot be read.
pub fn verify(path: &Path, key: Option<&[u8]>) -> Result<VerifyReport, VerifyError> {
    let chain_key = key.map(|k| derive(k, "chain"));
    let files = log_files(path)?;
    let mut report = VerifyReport::default();
    verify_files(&files, path.is_dir(), chain_key.as_deref(), &mut report)?;
    // The folder's own checkpoints, when it has them.
    if path.is_dir() {
        if let Ok(text) = fs::read_to_string(path.join(CHECKPOINT_FILE)) {
            let cps = Checkpoint::parse_all(&text);
            check_checkpoints(path, &path.join(CHECKPOINT_FILE), key, &cps, &mut report)?;
        }
    }
    Ok(report)
}

/// The log files at `path` (a folder's, in class and date order; or the one file), with the
/// class and day their names give.
fn log_files(path: &Path) -> Result<Vec<(Option<(AuditClass, i64)>, PathBuf)>, VerifyError> {
    let unreadable = |e: std::io::Error| VerifyError {
        file: path.to_owned(),
        line: 0,
        kind: Tamper::Unreadable,
        detail: e.to_string(),
    };
    if path.is_dir() {
        return Ok(files_of(path)
            .map_err(unreadable)?
            .into_iter()
            .map(|(c, d, p)| (Some((c, d)), p))
            .collect());
    }
    fs::metadata(path).map_err(unreadable)?;
    let named = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_name);
    Ok(vec![(named, path.to_owned())])
}

/// [`verify`], then the log against the checkpoints in `checkpoints` (an external copy: the
/// `auth.audit.checkpoint` records exported from the collector's log store, one JSON object
/// per line, or a saved `checkpoints.json`), the latest of each class: a log shorter than it,
/// a file it names that is gone, or a checkpoint that does not verify, is reported.
///
/// # Errors
///
/// As [`verify`]; [`Tamper::Truncated`] or [`Tamper::ForgedCheckpoint`] for the checkpoints;
/// [`Tamper::Unreadable`] when `checkpoints` cannot be read or holds none.
pub fn verify_with_checkpoints(
    path: &Path,
    key: Option<&[u8]>,
    checkpoints: &Path,
) -> Result<VerifyReport, VerifyError> {
    let text = fs::read_to_string(checkpoints).map_err(|e| VerifyError {
        file: checkpoints.to_owned(),
        line: 0,
        kind: Tamper::Unreadable,
        detail: e.to_string(),
    })?;
    let cps = Checkpoint::parse_all(&text);
    if cps.is_empty() {
        return Err(VerifyError {
            file: checkpoints.to_owned(),
            line: 0,
            kind: Tamper::Unreadable,
            detail: "no checkpoint in it".into(),
        });
    }
    let mut report = verify(path, key)?;
    let dir = if path.is_dir() {
        path.to_owned()
    } else {
        path.parent().map(Path::to_owned).unwrap_or_default()
    };
    report.checkpoints = 0;
    check_checkpoints(&dir, checkpoints, key, &cps, &mut report)?;
    Ok(report)
}

/// The log in `dir` against the latest checkpoint of each class in `cps` (read from `from`).
fn check_checkpoints(
    dir: &Path,
    from: &Path,
    key: Option<&[u8]>,
    cps: &[Checkpoint],
    report: &mut VerifyReport,
) -> Result<(), VerifyError> {
    let checkpoint_key = key.map(|k| derive(k, "checkpoint"));
    let mut latest: std::collections::BTreeMap<&str, &Checkpoint> =
        std::collections::BTreeMap::new();
    for (i, c) in cps.iter().enumerate() {
        if !c.holds(checkpoint_key.as_deref()) {
            return Err(VerifyError {
                file: from.to_owned(),
                line: i + 1,
                kind: Tamper::ForgedCheckpoint,
                detail: format!(
                    "the checkpoint of {} ({} records of {}) does not verify{}",
                    c.class,
                    c.records,
                    c.file,
                    if key.is_none() && c.chain == "hmac-sha256" {
                        ": it is keyed, give the audit key"
                    } else {
                        ""
                    }
                ),
            });
        }
        let newer = latest
            .get(c.class.as_str())
            .is_none_or(|l| (c.file.as_str(), c.records) > (l.file.as_str(), l.records));
        if newer {
            latest.insert(&c.class, c);
        }
    }
    for c in latest.values() {
        let file = dir.join(&c.file);
        let data = match fs::read(&file) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VerifyError {
                    file,
                    line: 0,
                    kind: Tamper::Truncated,
                    detail: format!(
                        "the file is gone: its checkpoint at {} counted {} records in it",
                        c.time, c.records
                    ),
                })
            }
            Err(e) => {
                return Err(VerifyError {
                    file,
                    line: 0,
                    kind: Tamper::Unreadable,
                    detail: e.to_string(),
                })
            }
        };
        let (lines, _) = split_lines(&data);
        let held = lines.len() as u64;
        if held < c.records {
            return Err(VerifyError {
                file,
                line: lines.len() + 1,
                kind: Tamper::Truncated,
                detail: format!(
                    "{} records missing: it holds {held}, its checkpoint at {} counted {}",
                    c.records - held,
                    c.time,
                    c.records
                ),
            });
        }
        let n = usize::try_from(c.records).unwrap_or(usize::MAX);
        if n > 0 {
            let line = String::from_utf8_lossy(lines[n - 1]);
            if split_line(&line).map(|(_, h)| h) != Some(c.head.as_str()) {
                return Err(VerifyError {
                    file,
                    line: n,
                    kind: Tamper::Edited,
                    detail: "the record is not the one its checkpoint signed".into(),
                });
            }
        }
        report.checkpoints += 1;
    }
    Ok(())
}

fn verify_files(
    files: &[(Option<(AuditClass, i64)>, PathBuf)],
    folder: bool,
    chain_key: Option<&[u8]>,
    report: &mut VerifyReport,
) -> Result<(), VerifyError> {
    let unreadable = |path: &Path, e: std::io::Error| VerifyError {
        file: path.to_owned(),
        line: 0,
        kind: Tamper::Unreadable,
        detail: e.to_string(),
    };
    // The seals of the days pruned past their retention, as their prune records say.
    let mut pruned: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (_, file) in files {
        if let Ok(text) = fs::read_to_string(file) {
            for l in text.lines().filter(|l| l.contains(PRUNE_RECORD)) {
                if let Some((body, _)) = split_line(l) {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                        if v["event.name"] == PRUNE_RECORD {
                            if let Some(h) = v["audit.pruned"]["seal"].as_str() {
                                pruned.insert(h.to_owned());
                            }
                        }
                    }
                }
            }
        }
    }
    for (i, (named, file)) in files.iter().enumerate() {
        let class = named.map(|(c, _)| c);
        // The oldest file of its class in a folder: a day before it was pruned (and said so),
        // or there was none.
        let first_of_class = class.is_some() && (i == 0 || files[i - 1].0.map(|(c, _)| c) != class);
        if first_of_class && folder {
            if let Ok(text) = fs::read_to_string(file) {
                let prev = text
                    .lines()
                    .next()
                    .and_then(split_line)
                    .and_then(|(body, _)| serde_json::from_str::<serde_json::Value>(&body).ok())
                    .and_then(|v| v["prev"].as_str().map(str::to_owned));
                if let Some(p) = prev {
                    if p != ZERO && !pruned.contains(&p) {
                        return Err(VerifyError {
                            file: file.clone(),
                            line: 1,
                            kind: Tamper::Removed,
                            detail: "the day before this file is gone, and no prune record says it was pruned past its retention".into(),
                        });
                    }
                }
            }
        }
        let newest = files[i + 1..]
            .iter()
            .all(|(n, _)| n.map(|(c, _)| c) != class);
        // Chained to the previous file of the class, when the folder holds it.
        let prev_file = (i > 0 && class.is_some() && files[i - 1].0.map(|(c, _)| c) == class)
            .then(|| &files[i - 1].1);
        let expect_prev = match prev_file {
            Some(p) => {
                let mut f = File::open(p).map_err(|e| unreadable(p, e))?;
                let (_, line) = tail_of(&mut f).map_err(|e| unreadable(p, e))?;
                line.as_deref().and_then(seq_and_hash).map(|(_, h)| h)
            }
            None => None,
        };
        let data = fs::read(file).map_err(|e| VerifyError {
            file: file.clone(),
            line: 0,
            kind: Tamper::Unreadable,
            detail: e.to_string(),
        })?;
        verify_content(file, &data, *named, chain_key, expect_prev, newest, report)?;
        report.files += 1;
    }
    Ok(())
}

/// The complete lines of a log (without their `\n`), and whether the last one was cut.
fn split_lines(data: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    // After the last `\n` comes either nothing or a torn record.
    let tail = lines.pop().unwrap_or_default();
    (lines, !tail.is_empty())
}

/// Checks one log's content held in memory (a file read from a backup, an object store, a
/// pipe): every record's hash, `seq` and `prev`, as [`verify`] checks a file. The content is
/// taken as the newest of its class, so a torn last record is reported in
/// [`VerifyReport::torn`] (as `name`) rather than as tampering. The class and day a file name
/// would give are not checked.
///
/// # Errors
///
/// The first record that was edited, removed, inserted or reordered, with `name` as its file.
pub fn verify_bytes(
    name: &Path,
    data: &[u8],
    key: Option<&[u8]>,
) -> Result<VerifyReport, VerifyError> {
    let chain_key = key.map(|k| derive(k, "chain"));
    let mut report = VerifyReport::default();
    verify_content(
        name,
        data,
        None,
        chain_key.as_deref(),
        None,
        true,
        &mut report,
    )?;
    report.files = 1;
    Ok(report)
}

fn verify_content(
    path: &Path,
    data: &[u8],
    named: Option<(AuditClass, i64)>,
    chain_key: Option<&[u8]>,
    expect_first_prev: Option<String>,
    newest: bool,
    report: &mut VerifyReport,
) -> Result<(), VerifyError> {
    let bad = |line: usize, kind: Tamper, detail: String| VerifyError {
        file: path.to_owned(),
        line,
        kind,
        detail,
    };
    let (lines, torn) = split_lines(data);
    if torn {
        if !newest {
            return Err(bad(
                lines.len() + 1,
                Tamper::Malformed,
                "a torn record in a file that is not the newest of its class".into(),
            ));
        }
        report.torn.push(path.to_owned());
    }
    // The seq of every line first: telling a removal from a reordering needs the lines after
    // the first break.
    let seqs: Vec<Option<u64>> = lines
        .iter()
        .map(|l| {
            let l = String::from_utf8_lossy(l);
            let (body, _) = split_line(&l)?;
            serde_json::from_str::<serde_json::Value>(&body).ok()?["seq"].as_u64()
        })
        .collect();
    let kid = chain_key.map(key_id);
    let (mut expected, mut last) = (0u64, None::<String>);
    for (idx, raw) in lines.iter().enumerate() {
        let n = idx + 1;
        let line =
            std::str::from_utf8(raw).map_err(|_| bad(n, Tamper::Malformed, "not UTF-8".into()))?;
        let Some((body, hash)) = split_line(line) else {
            return Err(bad(
                n,
                Tamper::Malformed,
                "no hash at the end of the line".into(),
            ));
        };
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| bad(n, Tamper::Malformed, format!("not JSON: {e}")))?;
        let keyed = v["chain"] == "hmac-sha256";
        match (keyed, chain_key) {
            (true, None) => {
                return Err(bad(
                    n,
                    Tamper::WrongKey,
                    "the chain is keyed: give the audit key".into(),
                ))
            }
            (false, Some(_)) => {
                return Err(bad(
                    n,
                    Tamper::WrongKey,
                    "a record without the key in a log checked with one".into(),
                ))
            }
            (true, Some(_)) if v["key_id"].as_str() != kid.as_deref() => {
                return Err(bad(n, Tamper::WrongKey, "written with another key".into()))
            }
            _ => {}
        }
        if chain_hash(chain_key.filter(|_| keyed), body.as_bytes()) != hash {
            return Err(bad(
                n,
                Tamper::Edited,
                "the record does not match its hash".into(),
            ));
        }
        if let Some((class, day)) = named {
            // A record is in its own day's file, or the next day's (queued across midnight).
            let t = v["time"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok());
            // A seal is written when a later day starts: at that day's time.
            let is_seal = v["event.name"] == SEAL_RECORD;
            let in_place = t
                .map(day_of)
                .is_some_and(|d| d == day || d + 1 == day || (is_seal && d >= day));
            if v["audit.class"] != class.as_str() || !in_place {
                return Err(bad(
                    n,
                    Tamper::Inserted,
                    "a record of another class or day".into(),
                ));
            }
        }
        let seq = seqs[idx].ok_or_else(|| bad(n, Tamper::Malformed, "no seq".into()))?;
        let prev = v["prev"].as_str().unwrap_or_default();
        if seq > expected {
            let later = seqs[idx + 1..].contains(&Some(expected));
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
        if seq < expected {
            let seen_before = seqs[..idx].contains(&Some(seq));
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
        match (&last, &expect_first_prev) {
            (Some(l), _) if prev != l => {
                return Err(bad(n, Tamper::Inserted, "prev is not the previous record's hash".into()))
            }
            (None, Some(p)) if prev != p => {
                return Err(bad(n, Tamper::Removed, "the first record does not follow the previous file's last: records or a file between them are gone".into()))
            }
            _ => {}
        }
        expected = seq + 1;
        last = Some(hash.to_owned());
        report.records += 1;
        if v["event.name"] == SEAL_RECORD {
            // The seal ends the file, and holds its count and digest.
            if idx + 1 != lines.len() {
                return Err(bad(
                    n,
                    Tamper::Inserted,
                    "a seal before the end of the file".into(),
                ));
            }
            let before: usize = lines[..idx].iter().map(|l| l.len() + 1).sum();
            let digest = hex(&Sha256::digest(&data[..before]));
            let s = &v["audit.seal"];
            if s["records"].as_u64() != Some(seq) || s["sha256"].as_str() != Some(digest.as_str()) {
                return Err(bad(
                    n,
                    Tamper::Edited,
                    "the file's records do not match its seal".into(),
                ));
            }
            report.sealed += 1;
        } else if idx + 1 == lines.len() && !newest && named.is_some() {
            return Err(bad(
                0,
                Tamper::Truncated,
                format!(
                    "the day's file ends without its seal ({} records): records cut off its end, or the file was cut",
                    seq + 1
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_on(day: i64, n: u64) -> AuditRecord {
        let mut r = AuditRecord::new(
            "auth.login.failure",
            AuditClass::Security,
            super::super::record::FROM_APPLICATION,
        );
        r.time = SystemTime::UNIX_EPOCH + Duration::from_secs(day as u64 * 86_400 + 3600 + n);
        r.error_type = Some(format!("attempt {n}"));
        r
    }

    /// Each day's file carries on the chain of the day before: a file removed from the
    /// middle, or a torn record in an older file, is found.
    #[test]
    fn files_chain_across_days() {
        let dir = std::env::temp_dir().join(format!("authwatch-days-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let day = 20_000;
        let now = Arc::new(std::sync::atomic::AtomicI64::new(day));
        let clock = now.clone();
        let mut w = Writer::open(
            FileSettings::new(&dir).clock(move || {
                let d = clock.load(std::sync::atomic::Ordering::SeqCst);
                SystemTime::UNIX_EPOCH + Duration::from_secs(d as u64 * 86_400 + 7200)
            }),
            None,
        )
        .unwrap();
        for d in 0..3 {
            now.store(day + d, std::sync::atomic::Ordering::SeqCst);
            if d > 0 {
                // A record of the day before, queued across midnight: it goes to the new file.
                w.write(&record_on(day + d - 1, 9));
            }
            for n in 0..3 {
                w.write(&record_on(day + d, n));
            }
        }
        w.flush();
        let r = verify(&dir, None).unwrap();
        // Two days over, each ended by its seal.
        assert_eq!((r.files, r.records, r.sealed), (3, 13, 2));
        // A day's file cut (its seal with it): named.
        let first = dir.join(file_name(AuditClass::Security, day));
        let whole = fs::read_to_string(&first).unwrap();
        let cut: String = whole.lines().take(2).map(|l| format!("{l}\n")).collect();
        fs::write(&first, &cut).unwrap();
        let e = verify(&dir, None).unwrap_err();
        assert_eq!((&e.file, &e.kind), (&first, &Tamper::Truncated), "{e}");
        // Its seal edited to match the cut: the next day's first record no longer follows.
        fs::write(&first, &whole).unwrap();
        assert!(verify(&dir, None).is_ok());
        // The middle day gone.
        let middle = dir.join(file_name(AuditClass::Security, day + 1));
        let saved = fs::read(&middle).unwrap();
        fs::remove_file(&middle).unwrap();
        let e = verify(&dir, None).unwrap_err();
        assert_eq!((e.line, &e.kind), (1, &Tamper::Removed), "{e}");
        fs::write(&middle, &saved).unwrap();
        // A torn record in a file that is not the newest: not a crash.
        let first = dir.join(file_name(AuditClass::Security, day));
        let mut f = OpenOptions::new().append(true).open(&first).unwrap();
        f.write_all(b"{\"seq\":4,\"ha").unwrap();
        let e = verify(&dir, None).unwrap_err();
        assert_eq!(e.kind, Tamper::Malformed, "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// Pruning takes only whole sealed days and says so in a record of the class: the oldest
    /// day left verifies; a day deleted by hand does not.
    #[test]
    fn a_pruned_day_is_told_from_a_deleted_one() {
        let dir = std::env::temp_dir().join(format!("authwatch-pruned-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let day = 20_200;
        let now = Arc::new(std::sync::atomic::AtomicI64::new(day));
        let clock = now.clone();
        let mut w = Writer::open(
            FileSettings::new(&dir).clock(move || {
                let d = clock.load(std::sync::atomic::Ordering::SeqCst);
                SystemTime::UNIX_EPOCH + Duration::from_secs(d as u64 * 86_400 + 7200)
            }),
            None,
        )
        .unwrap();
        let auth = |d: i64, n: u64| {
            let mut r = record_on(d, n);
            r.class = AuditClass::Authentication;
            r.name = "auth.login.success";
            r
        };
        for d in [day, day + 1, day + 95] {
            now.store(d, std::sync::atomic::Ordering::SeqCst);
            for n in 0..2 {
                w.write(&auth(d, n));
            }
        }
        w.flush();
        // The first day (sealed, 95 days old) is gone; the second, sealed only when the last
        // day started, waits for the next day's pruning.
        assert!(!dir
            .join(file_name(AuditClass::Authentication, day))
            .exists());
        let second = dir.join(file_name(AuditClass::Authentication, day + 1));
        assert!(second.exists());
        let last =
            fs::read_to_string(dir.join(file_name(AuditClass::Authentication, day + 95))).unwrap();
        assert!(
            last.lines().next().unwrap().contains(PRUNE_RECORD),
            "{last}"
        );
        let r = verify(&dir, None).unwrap();
        assert_eq!((r.files, r.sealed), (2, 1), "{r:?}");
        // The second day deleted by hand: no record says it was pruned.
        fs::remove_file(&second).unwrap();
        let e = verify(&dir, None).unwrap_err();
        assert_eq!(e.kind, Tamper::Removed, "{e}");
        assert!(e.detail.contains("no prune record"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A writer started on a later day than the class's last file (a restart after a quiet
    /// day, or a crash) seals that file before it starts the new one.
    #[test]
    fn a_restart_on_a_later_day_seals_the_last_file() {
        let dir = std::env::temp_dir().join(format!("authwatch-reseal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let day = 20_100;
        let at =
            |d: i64| move || SystemTime::UNIX_EPOCH + Duration::from_secs(d as u64 * 86_400 + 60);
        let mut w = Writer::open(FileSettings::new(&dir).clock(at(day)), None).unwrap();
        for n in 0..3 {
            w.write(&record_on(day, n));
        }
        w.flush();
        drop(w);
        assert_eq!(
            verify(&dir, None).unwrap().sealed,
            0,
            "today's file is open"
        );
        let mut w = Writer::open(FileSettings::new(&dir).clock(at(day + 2)), None).unwrap();
        w.write(&record_on(day + 2, 0));
        w.flush();
        let r = verify(&dir, None).unwrap();
        assert_eq!((r.files, r.records, r.sealed), (2, 5, 1));
        let _ = fs::remove_dir_all(&dir);
    }

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
