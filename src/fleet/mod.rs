//! Fleet mode: the replicas of one service share their request counts through Redis, so the
//! alert rules that read counts (failure ratios, rates, spikes, means) evaluate the fleet's
//! totals on every instance.
//!
//! Each instance keeps counting on its own, as without a fleet. A thread of authwatch's own
//! (never a Tokio worker, never a request) runs one Lua script a second: it stores this
//! instance's cumulative counts in a hash under the service's name, marks the instance alive,
//! removes the instances not heard from in three flush intervals, and returns what every
//! instance reported. The alert engine then reads its own counts plus what the others counted
//! since this instance joined ([`merge`]). When Redis is away (down, slow, answering
//! garbage), nothing waits for it: the instance goes on with its own counts plus what it had
//! read from the others, says so (`auth.fleet.connected`, the `fleet` health check, one log
//! line per change), and tries again with a growing pause (1 s doubling to 30 s, jittered).
//!
//! What Redis holds is fixed in size whatever the traffic: per instance, one hash field of a
//! few hundred bytes and one sorted-set entry; both keys expire when no instance has written
//! for a minute.

mod accounts;
mod blocks;
mod detect;
mod merge;
mod windows;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use authwatch_alerts::RequestCounts;
use authwatch_layer::AuthOp;

use merge::{decode, encode, Peers, Report};

/// How long one connection attempt, or one round trip, may take before it counts as failed.
const IO_TIMEOUT: Duration = Duration::from_millis(800);
/// The longest pause between two attempts while Redis is away.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// An instance not heard from in this many flush intervals is gone.
const STALE_FLUSHES: u32 = 3;
/// How often the block list is checked between two flushes.
const BLOCK_POLL: Duration = Duration::from_millis(250);
/// The least time the keys live after the last write of any instance.
const MIN_KEY_TTL: Duration = Duration::from_secs(60);

/// Where the replicas of a service share their state: a Redis 7 server (standalone; a
/// password in the URL, `redis://:secret@host:6379`, and TLS with `rediss://` work).
///
/// ```no_run
/// # fn main() -> Result<(), authwatch::BuildError> {
/// use authwatch::{AuthWatch, Fleet};
///
/// let watch = AuthWatch::builder()
///     .service_name("accounts")
///     .fleet(Fleet::redis("redis://127.0.0.1:6379").namespace("staging"))
///     .build()?;
/// # Ok(()) }
/// ```
///
/// Instances with the same service name (and namespace) form one fleet. Without
/// [`AuthWatchBuilder::fleet`](crate::AuthWatchBuilder::fleet), `AUTHWATCH_REDIS_URL` turns it
/// on.
#[derive(Debug, Clone)]
pub struct Fleet {
    url: String,
    namespace: Option<String>,
    flush: Duration,
    name: Option<String>,
}

impl Fleet {
    /// A fleet on the Redis server at `url` (`redis://[:password@]host[:port][/db]`, or
    /// `rediss://` for TLS). The URL is checked when the monitor is built; the server need
    /// not be up then.
    pub fn redis(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: None,
            flush: Duration::from_secs(1),
            name: None,
        }
    }

    /// Keeps this fleet apart from others of the same service name on the same Redis (one
    /// Redis for staging and production): keys are prefixed with it.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// How often the instance writes its counts and reads the fleet's (default 1 s; between
    /// 100 ms and 60 s). The rules see the other instances' requests this much later.
    #[must_use]
    pub fn flush_interval(mut self, every: Duration) -> Self {
        self.flush = every.clamp(Duration::from_millis(100), Duration::from_secs(60));
        self
    }

    /// The name this instance shows in [`FleetStatus::instances`] (default: the host name and
    /// the process id, `web-7f9c:41`).
    #[must_use]
    pub fn instance_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The fleet `AUTHWATCH_REDIS_URL` names, when it is set and not empty.
    /// The block list this fleet's instances of `service` share, read from Redis now (what
    /// `authwatch blocks export --redis` prints). `since` is unknown there (now), and the
    /// refusals are each instance's own (0 here).
    ///
    /// # Errors
    ///
    /// Redis cannot be reached or answers garbage.
    pub fn read_blocks(&self, service: &str) -> Result<Vec<authwatch_layer::BlockedIp>, String> {
        ensure_crypto_provider();
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| format!("Redis URL {}: {e}", self.shown_url()))?;
        let mut c = connect(&client).map_err(|e| format!("{}: {e}", self.shown_url()))?;
        let keys = Keys::new(self.namespace.as_deref(), service);
        blocks::read(&mut c, &keys.blocks).map_err(|e| format!("{}: {e}", self.shown_url()))
    }

    pub(crate) fn from_env() -> Option<Self> {
        let url = std::env::var("AUTHWATCH_REDIS_URL").ok()?;
        let url = url.trim();
        (!url.is_empty()).then(|| Self::redis(url))
    }

    /// The URL with its password replaced, for messages.
    fn shown_url(&self) -> String {
        shown_url(&self.url)
    }
}

/// `url` with the password of its user part (`scheme://user:password@host`) replaced.
fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let auth_end = rest.find('/').unwrap_or(rest.len());
    match rest[..auth_end].rsplit_once('@') {
        Some((user_pass, host)) => match user_pass.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{}", &rest[auth_end..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// One instance of the fleet, as the last flush saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetInstance {
    /// Its name ([`Fleet::instance_name`]).
    pub name: String,
    /// How long ago it last wrote its counts, on Redis' clock.
    pub last_flush: Duration,
    /// Whether it is this instance.
    pub this: bool,
}

/// Where fleet mode stands ([`AuthWatch::fleet_status`](crate::AuthWatch::fleet_status)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStatus {
    /// Whether the last flush reached Redis. When false, the alert rules read this instance's
    /// own counts plus what the others had counted when Redis was last reached.
    pub connected: bool,
    /// Failed connection attempts and flushes since start.
    pub errors: u64,
    /// Successful flushes since start.
    pub flushes: u64,
    /// The time they took together, on the flush's own thread: this instance's encoding and
    /// Redis' scripts (one round trip each). Per flush, `flush_time / flushes`.
    pub flush_time: Duration,
    /// The instances alive at the last successful flush, this one included, by name.
    pub instances: Vec<FleetInstance>,
    /// The last error, while not connected.
    pub last_error: Option<String>,
    /// Requests of the fleet's counts that the alert rules read: this instance's, plus what
    /// the others counted since it joined (successes, failures, rate-limited and cancelled
    /// requests of every operation).
    pub requests: u64,
    /// Failures (server errors included) among them.
    pub failures: u64,
    p95: [Option<Duration>; AuthOp::COUNT],
}

impl FleetStatus {
    /// The p95 of `op` over the fleet's windows: this instance's values and the others' (as
    /// of their last flush) together, exact to 3 significant digits (HDR histograms merge
    /// exactly); this instance's alone while Redis is away. What the percentile rules read.
    #[must_use]
    pub fn p95(&self, op: AuthOp) -> Option<Duration> {
        self.p95[op.index()]
    }
}

/// This instance's cumulative counts (the statistics').
pub(crate) type LocalCounts = Arc<dyn Fn() -> [RequestCounts; AuthOp::COUNT] + Send + Sync>;

/// This instance's latency windows now, per operation (token validation with its guards'),
/// as the percentile rules read them.
pub(crate) type LocalWindows =
    Arc<dyn Fn() -> [authwatch_hdr::Snapshot; AuthOp::COUNT] + Send + Sync>;

struct Shared {
    connected: AtomicBool,
    errors: AtomicU64,
    /// Successful flushes, and the time they took (Redis' work included), in nanoseconds.
    flushes: AtomicU64,
    flush_nanos: AtomicU64,
    peers: Mutex<Peers>,
    instances: Mutex<Vec<FleetInstance>>,
    last_error: Mutex<Option<String>>,
    stop: Mutex<bool>,
    wake: Condvar,
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// The notification gate's connection (the engine's thread, apart from the flush's).
    gate: Mutex<Option<redis::Connection>>,
    client: redis::Client,
    alert_prefix: String,
    /// What brute-force detection shares, once the alert engine is attached.
    detect: std::sync::OnceLock<detect::Detect>,
    /// The fleet's detections at the last flush.
    detections: Mutex<Option<authwatch_alerts::Detections>>,
    /// The other instances' latency windows at the last flush, per operation.
    windows: Mutex<Vec<Vec<authwatch_hdr::Snapshot>>>,
    /// The block list shared with the fleet, once attached.
    blocks: std::sync::OnceLock<Arc<crate::blocks::Blocker>>,
    /// A change is waiting (a block was made): sync before the next flush.
    poke: AtomicBool,
}

/// A running fleet: its flush thread and what it last read.
#[derive(Clone)]
pub(crate) struct FleetHandle {
    shared: Arc<Shared>,
    local: LocalCounts,
    local_windows: LocalWindows,
}

impl std::fmt::Debug for FleetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetHandle").finish_non_exhaustive()
    }
}

impl FleetHandle {
    /// Checks the URL and starts the flush thread of `fleet` for `service`.
    pub(crate) fn start(
        fleet: &Fleet,
        service: &str,
        local: LocalCounts,
        local_windows: LocalWindows,
    ) -> Result<Self, crate::BuildError> {
        let client = redis::Client::open(fleet.url.as_str()).map_err(|e| {
            crate::BuildError::Config(format!("fleet: Redis URL {}: {e}", fleet.shown_url()))
        })?;
        let name = fleet.name.clone().unwrap_or_else(default_name);
        let id = format!("{name}#{:016x}", nonce());
        let keys = Keys::new(fleet.namespace.as_deref(), service);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            connected: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flush_nanos: AtomicU64::new(0),
            peers: Mutex::new(Peers::new(id.clone())),
            instances: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            done: Mutex::new(Some(done_rx)),
            gate: Mutex::new(None),
            client: client.clone(),
            alert_prefix: keys.alert.clone(),
            detect: std::sync::OnceLock::new(),
            detections: Mutex::new(None),
            windows: Mutex::new(Vec::new()),
            blocks: std::sync::OnceLock::new(),
            poke: AtomicBool::new(false),
        });
        let worker = Worker {
            shared: shared.clone(),
            local: local.clone(),
            local_windows: local_windows.clone(),
            client,
            keys,
            id,
            every: fleet.flush,
            shown: fleet.shown_url(),
        };
        std::thread::Builder::new()
            .name("authwatch-fleet".into())
            .spawn(move || {
                authwatch_otel::lower_thread_priority();
                worker.run();
                let _ = done_tx.send(());
            })
            .map_err(|e| {
                crate::BuildError::Config(format!("fleet: cannot start its thread: {e}"))
            })?;
        Ok(Self {
            shared,
            local,
            local_windows,
        })
    }

    /// The fleet's counts: this instance's own, plus what the others counted since it joined.
    pub(crate) fn counts(&self) -> [RequestCounts; AuthOp::COUNT] {
        let local = (self.local)();
        lock(&self.shared.peers).total(&local)
    }

    /// The alert engine's [`NotifyGate`](authwatch_alerts::NotifyGate): of the instances
    /// that see an alert change state, the first to report the new state sends the webhook
    /// message, the others skip it. When Redis cannot answer (or the last flush did not reach
    /// it), every instance sends its own: a message twice rather than none.
    pub(crate) fn notify_gate(&self) -> authwatch_alerts::NotifyGate {
        let h = self.clone();
        Arc::new(move |a: &authwatch_alerts::Alert| h.first_to_notify(a))
    }

    fn first_to_notify(&self, a: &authwatch_alerts::Alert) -> bool {
        let state = match a.state {
            authwatch_alerts::AlertState::Firing => "firing",
            authwatch_alerts::AlertState::Resolved => "resolved",
            _ => return true,
        };
        // Redis away: no attempt (each would hold the engine's thread up to the timeout), and
        // this instance sends its own message.
        if !self.connected() {
            return true;
        }
        let key = format!("{}{}", self.shared.alert_prefix, fingerprint(a));
        let mut conn = lock(&self.shared.gate);
        if conn.is_none() {
            *conn = connect(&self.shared.client).ok();
        }
        let answer = conn.as_mut().map(|c| {
            redis::Script::new(NOTIFY)
                .key(&key)
                .arg(state)
                .arg(u64::try_from(ALERT_STATE_TTL.as_millis()).unwrap_or(u64::MAX))
                .invoke::<i64>(c)
        });
        match answer {
            Some(Ok(n)) => n == 1,
            Some(Err(_)) | None => {
                *conn = None;
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    /// Shares the alert engine's failures (`outbox`, which it fills) with the fleet, for
    /// detectors sized and with thresholds as `engine`'s.
    pub(crate) fn attach_detection(
        &self,
        outbox: Arc<authwatch_alerts::FailureOutbox>,
        engine: &authwatch_alerts::AlertEngine,
    ) {
        let _ = self.shared.detect.set(detect::Detect {
            outbox,
            cfg: *engine.config().brute_force_config(),
            threshold: engine.brute_force_threshold(),
            accounts: *engine.config().account_config(),
            levels: engine.account_levels(),
        });
    }

    /// Shares `blocker`'s blocks with the fleet: this instance's go to Redis at once, the
    /// others' are enforced here within about 250 ms.
    pub(crate) fn attach_blocks(&self, blocker: &Arc<crate::blocks::Blocker>) {
        if self.shared.blocks.set(blocker.clone()).is_ok() {
            let shared = Arc::downgrade(&self.shared);
            blocker.attach_fleet(Box::new(move || {
                if let Some(s) = shared.upgrade() {
                    s.poke.store(true, Ordering::Relaxed);
                    let _stop = lock(&s.stop);
                    s.wake.notify_all();
                }
            }));
        }
    }

    /// The engine's source of the fleet's detections: those of the last flush, while
    /// connected; none (the engine's own only) while Redis is away.
    pub(crate) fn shared_detections(&self) -> authwatch_alerts::SharedDetections {
        let h = self.clone();
        Arc::new(move || {
            if h.connected() {
                lock(&h.shared.detections).clone()
            } else {
                None
            }
        })
    }

    /// The requests of `op` in the fleet's windows and their `q` quantile: `local` (this
    /// instance's window now) merged with the other instances' at the last flush, while
    /// connected; `local` alone while Redis is away. HDR histograms merge exactly: this is the
    /// quantile of the union of every instance's values, to 3 significant digits.
    pub(crate) fn op_quantile(
        &self,
        op: AuthOp,
        q: f64,
        mut local: authwatch_hdr::Snapshot,
    ) -> (u64, Option<Duration>) {
        if self.connected() {
            for w in lock(&self.shared.windows).iter() {
                if let Some(s) = w.get(op.index()) {
                    local.merge(s);
                }
            }
        }
        (local.count(), local.quantile(q))
    }

    /// The fleet's figures for a snapshot: its counts, and per operation this instance's
    /// window merged with the others' at the last flush (this instance's alone while Redis is
    /// away).
    pub(crate) fn snapshot(&self, window: Duration) -> crate::Snapshot {
        let counts = self.counts();
        let mut windows = (self.local_windows)();
        if self.connected() {
            for other in lock(&self.shared.windows).iter() {
                for (w, o) in windows.iter_mut().zip(other) {
                    w.merge(o);
                }
            }
        }
        crate::Snapshot::fleet(&counts, &windows, window)
    }

    /// Whether the last flush reached Redis.
    pub(crate) fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Failed attempts since start.
    pub(crate) fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    pub(crate) fn status(&self) -> FleetStatus {
        let connected = self.connected();
        let counts = self.counts();
        FleetStatus {
            requests: counts
                .iter()
                .map(|c| c.success + c.failure + c.rate_limited + c.cancelled)
                .sum(),
            failures: counts.iter().map(|c| c.failure).sum(),
            p95: {
                let local = (self.local_windows)();
                std::array::from_fn(|i| self.op_quantile(AuthOp::ALL[i], 0.95, local[i].clone()).1)
            },
            connected,
            errors: self.errors(),
            flushes: self.shared.flushes.load(Ordering::Relaxed),
            flush_time: Duration::from_nanos(self.shared.flush_nanos.load(Ordering::Relaxed)),
            instances: lock(&self.shared.instances).clone(),
            last_error: if connected {
                None
            } else {
                lock(&self.shared.last_error).clone()
            },
        }
    }

    /// Stops the thread after a last flush that takes this instance out of the fleet (the
    /// others keep what it counted); waits up to `wait` for it.
    pub(crate) fn stop(&self, wait: Duration) {
        *lock(&self.shared.stop) = true;
        self.shared.wake.notify_all();
        if let Some(rx) = lock(&self.shared.done).take() {
            let _ = rx.recv_timeout(wait);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A number that differs between two starts of the same instance.
pub(crate) fn nonce() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// `host:pid`: the host name from `HOSTNAME` or `/etc/hostname`.
fn default_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "instance".into());
    format!("{host}:{}", std::process::id())
}

/// The fleet's keys. The braces are a hash tag: in a Redis Cluster both land on one slot, as
/// one script must.
struct Keys {
    counts: String,
    seen: String,
    /// Every instance's latency windows.
    windows: String,
    /// Followed by an alert's fingerprint: the last state notified.
    alert: String,
    /// The brute-force detection's keys start so.
    detect: String,
    /// The account-level detection's keys start so.
    accounts: String,
    /// The block list's keys start so.
    blocks: String,
}

impl Keys {
    fn new(namespace: Option<&str>, service: &str) -> Self {
        let clean = |s: &str| s.replace(['{', '}'], "");
        let tag = match namespace {
            Some(ns) => format!("{}:{}", clean(ns), clean(service)),
            None => clean(service),
        };
        Self {
            counts: format!("authwatch:{{{tag}}}:counts"),
            seen: format!("authwatch:{{{tag}}}:seen"),
            windows: format!("authwatch:{{{tag}}}:windows"),
            alert: format!("authwatch:{{{tag}}}:alert:"),
            detect: format!("authwatch:{{{tag}}}:bf:"),
            accounts: format!("authwatch:{{{tag}}}:ac:"),
            blocks: format!("authwatch:{{{tag}}}:blocks:"),
        }
    }
}

/// One flush, atomically: store this instance's counts, its latency windows and the time it
/// was seen (Redis' clock), forget the instances not seen within the stale time, renew the
/// keys' expiry, and return every instance's counts, when each was seen, now, and every
/// instance's windows.
///
/// KEYS: counts hash, seen sorted set, windows hash. ARGV: instance id, its join time (0 on
/// the first flush: now), its counts, stale after (ms), key expiry (ms), leaving (1: remove
/// this instance instead), its windows ([`windows::encode`]).
const FLUSH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[6] == '1' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  return {{}, {}, now, {}}
end
local joined = tonumber(ARGV[2])
if joined == 0 then joined = now end
redis.call('HSET', KEYS[1], ARGV[1], joined .. ';' .. ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[7])
redis.call('ZADD', KEYS[2], now, ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[4])))
for _, id in ipairs(stale) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[2], id)
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
return {redis.call('HGETALL', KEYS[1]), redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES'), now,
  redis.call('HGETALL', KEYS[3])}
";

/// The notification gate: set the alert's last notified state, and say whether it changed
/// (1: this instance sends the message).
///
/// KEYS: the alert's key. ARGV: its new state, the key's expiry (ms).
const NOTIFY: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// How long an alert's last notified state is kept: longer than any incident is expected to
/// stay unresolved. After it, a change is notified again.
const ALERT_STATE_TTL: Duration = Duration::from_secs(24 * 3600);

/// An alert's identity across instances: its name and labels, hashed (the labels may hold an
/// address; the key holds none).
fn fingerprint(a: &authwatch_alerts::Alert) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(a.name.as_bytes());
    for (k, v) in &a.labels {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([b'=']);
        h.update(v.as_bytes());
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A connection with the round-trip timeout set. Never panics: a panic inside the client (a
/// TLS setup it cannot make) is returned as an error.
fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    if matches!(
        client.get_connection_info().addr(),
        redis::ConnectionAddr::TcpTls { .. }
    ) {
        ensure_crypto_provider();
    }
    let connected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client.get_connection_with_timeout(IO_TIMEOUT)
    }))
    .map_err(|p| {
        let why = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        redis::RedisError::from((redis::ErrorKind::Client, "the Redis client failed", why))
    })?;
    let c = connected?;
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(c)
}

/// The Redis client builds its TLS configuration on rustls' process-wide provider. When the
/// process has several built in (ring and aws-lc-rs, as other crates' features may bring) and
/// has not chosen one, rustls cannot pick: authwatch then installs ring, the provider its own
/// OTLP TLS uses. A provider the application installed first is left alone.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

struct Worker {
    shared: Arc<Shared>,
    local: LocalCounts,
    local_windows: LocalWindows,
    client: redis::Client,
    keys: Keys,
    id: String,
    every: Duration,
    shown: String,
}

impl Worker {
    fn run(self) {
        let script = redis::Script::new(FLUSH);
        let mut conn: Option<redis::Connection> = None;
        let mut backoff = self.every;
        let mut next_try = Instant::now();
        // Whether the state was ever reported: the first failure is logged too.
        let mut reported: Option<bool> = None;
        // The first flush at once: the fleet forms (and the health check passes) without
        // waiting a flush interval.
        let mut first = true;
        let mut next_full = Instant::now();
        // The version of the fleet's block list last read.
        let mut known = String::new();
        loop {
            let stopping = if first {
                first = false;
                *lock(&self.shared.stop)
            } else {
                self.wait(next_full, conn.is_some())
            };
            // Every handle is gone (the monitor was dropped without a shutdown): stop.
            if Arc::strong_count(&self.shared) == 1 {
                return;
            }
            if conn.is_none() && (Instant::now() >= next_try || stopping) {
                match connect(&self.client) {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        self.failed(&e, &mut reported);
                        next_try = Instant::now() + jittered(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            if let Some(c) = conn.as_mut() {
                // Between two flushes: the block list alone (a change here, or the fleet's).
                let full = stopping || Instant::now() >= next_full;
                if !full {
                    if let Err(e) = self.sync_blocks(c, &mut known) {
                        conn = None;
                        self.failed(&e, &mut reported);
                        next_try = Instant::now() + jittered(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    continue;
                }
                next_full = Instant::now() + self.every;
                // Stopping: a last flush of the counts, then out of the fleet (the others keep
                // what this instance counted).
                let started = Instant::now();
                let flushed = self
                    .flush(c, &script, false)
                    .and_then(|()| self.flush_detections(c))
                    .and_then(|()| self.sync_blocks(c, &mut known))
                    .and_then(|()| {
                        if stopping {
                            self.flush(c, &script, true)
                        } else {
                            Ok(())
                        }
                    });
                match flushed {
                    Ok(()) => {
                        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        self.shared.flush_nanos.fetch_add(took, Ordering::Relaxed);
                        self.shared.flushes.fetch_add(1, Ordering::Relaxed);
                        backoff = self.every;
                        if reported != Some(true) {
                            let n = lock(&self.shared.instances).len();
                            tracing::info!(
                                target: "authwatch::fleet",
                                redis = %self.shown,
                                instances = n,
                                "authwatch: fleet connected; the alert rules read the fleet's counts"
                            );
                            reported = Some(true);
                        }
                        self.shared.connected.store(true, Ordering::Relaxed);
                    }
                    Err(e) => {
                        conn = None;
                        self.failed(&e, &mut reported);
                        next_try = Instant::now() + jittered(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            if stopping {
                return;
            }
        }
    }

    /// Shares the engine's failures and reads the fleet's detections, once attached.
    fn flush_detections(&self, c: &mut redis::Connection) -> redis::RedisResult<()> {
        if let Some(d) = self.shared.detect.get() {
            let found = detect::flush(c, &self.keys.detect, d)?;
            let found = found.with_accounts(accounts::flush(c, &self.keys.accounts, d)?);
            *lock(&self.shared.detections) = Some(found);
        }
        Ok(())
    }

    /// Pushes this instance's block changes and reads the fleet's list when it changed.
    fn sync_blocks(&self, c: &mut redis::Connection, known: &mut String) -> redis::RedisResult<()> {
        self.shared.poke.store(false, Ordering::Relaxed);
        match self.shared.blocks.get() {
            Some(b) => blocks::sync(c, &self.keys.blocks, b, known),
            None => Ok(()),
        }
    }

    /// Sleeps until the next flush (`next_full`), or less with a block list to watch while
    /// `connected` (250 ms at most, or until a block is made), or until told to stop; true
    /// when stopping.
    fn wait(&self, next_full: Instant, connected: bool) -> bool {
        let stop = lock(&self.shared.stop);
        if *stop {
            return true;
        }
        let watch = connected && self.shared.blocks.get().is_some();
        if watch && self.shared.poke.load(Ordering::Relaxed) {
            return false;
        }
        let mut d = next_full.saturating_duration_since(Instant::now());
        if watch {
            d = d.min(BLOCK_POLL);
        }
        if d.is_zero() {
            // The connection is being retried: at most every flush interval.
            d = self.every;
        }
        let (stop, _) = self
            .shared
            .wake
            .wait_timeout(stop, d)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *stop
    }

    fn failed(&self, e: &redis::RedisError, reported: &mut Option<bool>) {
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
        self.shared.connected.store(false, Ordering::Relaxed);
        *lock(&self.shared.last_error) = Some(e.to_string());
        if *reported != Some(false) {
            tracing::warn!(
                target: "authwatch::fleet",
                redis = %self.shown,
                error = %e,
                "authwatch: fleet unreachable; the alert rules read this instance's counts (plus the others' as last read) until it is back"
            );
            *reported = Some(false);
        }
    }

    fn flush(
        &self,
        c: &mut redis::Connection,
        script: &redis::Script,
        leaving: bool,
    ) -> redis::RedisResult<()> {
        let counts = encode(&(self.local)());
        let joined = lock(&self.shared.peers).joined_ms().unwrap_or(0);
        let stale = self.every * STALE_FLUSHES;
        let ttl = (stale * 2).max(MIN_KEY_TTL);
        let windows = windows::encode(&(self.local_windows)());
        let (fields, seen, now, hdr): (Vec<String>, Vec<String>, u64, Vec<Vec<u8>>) = script
            .key(&self.keys.counts)
            .key(&self.keys.seen)
            .key(&self.keys.windows)
            .arg(&self.id)
            .arg(joined)
            .arg(counts)
            .arg(u64::try_from(stale.as_millis()).unwrap_or(u64::MAX))
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .arg(if leaving { "1" } else { "0" })
            .arg(windows)
            .invoke(c)?;
        if leaving {
            return Ok(());
        }
        // The others' windows (this instance reads its own live).
        let others: Vec<Vec<authwatch_hdr::Snapshot>> = hdr
            .chunks_exact(2)
            .filter(|kv| kv[0] != self.id.as_bytes())
            .filter_map(|kv| windows::decode(&kv[1]))
            .collect();
        *lock(&self.shared.windows) = others;
        let reports: Vec<Report> = fields
            .chunks_exact(2)
            .filter_map(|kv| {
                let (joined, counts) = kv[1].split_once(';')?;
                Some(Report {
                    id: kv[0].clone(),
                    joined_ms: joined.parse().ok()?,
                    counts: decode(counts)?,
                })
            })
            .collect();
        lock(&self.shared.peers).update(now, &reports);
        let mut instances: Vec<FleetInstance> = seen
            .chunks_exact(2)
            .map(|kv| {
                let at: f64 = kv[1].parse().unwrap_or(0.0);
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let age = now.saturating_sub(at.max(0.0) as u64);
                FleetInstance {
                    name: kv[0]
                        .rsplit_once('#')
                        .map_or(kv[0].as_str(), |(n, _)| n)
                        .to_owned(),
                    last_flush: Duration::from_millis(age),
                    this: kv[0] == self.id,
                }
            })
            .collect();
        instances.sort_by(|a, b| a.name.cmp(&b.name));
        *lock(&self.shared.instances) = instances;
        Ok(())
    }
}

/// `d` shortened by up to half at random, so instances restarted together do not retry in
/// step.
fn jittered(d: Duration) -> Duration {
    #[allow(clippy::cast_precision_loss)]
    let r = (nonce() >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(1.0 - r / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag_and_lose_stray_braces() {
        let k = Keys::new(Some("staging"), "acc{ounts}");
        assert_eq!(k.counts, "authwatch:{staging:accounts}:counts");
        assert_eq!(k.seen, "authwatch:{staging:accounts}:seen");
        assert_eq!(Keys::new(None, "a").counts, "authwatch:{a}:counts");
    }

    #[test]
    fn a_bad_url_is_refused_when_built_and_a_password_never_shown() {
        let err = FleetHandle::start(
            &Fleet::redis("http://not-redis"),
            "svc",
            Arc::new(|| [RequestCounts::default(); AuthOp::COUNT]),
            Arc::new(|| std::array::from_fn(|_| authwatch_hdr::Snapshot::empty())),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("fleet: Redis URL"), "{err}");
        assert_eq!(
            Fleet::redis("redis://:s3cret@cache:6379/0").shown_url(),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(
            shown_url("rediss://app:p@ss@cache/1"),
            "rediss://app:***@cache/1"
        );
        assert_eq!(shown_url("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(shown_url("redis://app@cache"), "redis://app@cache");
        let f = Fleet::redis("redis://h").flush_interval(Duration::from_millis(1));
        assert_eq!(f.flush, Duration::from_millis(100));
    }
}
