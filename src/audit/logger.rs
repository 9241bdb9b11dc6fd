//! What handlers call: [`LoginAuditLogger`], and the process's logger behind
//! [`get_login_audit_logger`].

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authwatch_layer::{FailureReason, Outcome};

use super::record::{
    class_of, AppEvent, AuditClass, AuditRecord, FROM_APPLICATION, LOCKOUT, LOGIN_FAILURE,
    LOGIN_SUCCESS, LOGOUT, PASSWORD_RESET, RATE_LIMITED, REGISTRATION, TOKEN_ISSUED,
};
use super::sanitize::{sanitize, MAX_TEXT, MAX_USER_AGENT};
use super::worker::{Auditor, Outputs, DEFAULT_QUEUE};

/// The spec's `LoginAuditLogger`: what your handlers call when they know who signed in.
///
/// Cheap to clone and to call (the record is queued; a worker writes it), never blocks, never
/// panics. Get it from [`AuthWatch::audit_logger`](crate::AuthWatch::audit_logger) (that
/// monitor's, which it keeps alive) or [`get_login_audit_logger`] (the process's, which
/// follows whichever monitor is running).
///
/// ```
/// # let watch = authwatch::AuthWatch::builder().otlp(false).build().unwrap();
/// let audit = watch.audit_logger();
/// let ip = "203.0.113.7".parse().ok();
/// audit.log_login_success("user-42", ip, Some("Mozilla/5.0"));
/// audit.log_login_failure("user-42", ip, Some("Mozilla/5.0"), "Invalid credentials");
/// audit.log_token_issued("user-42", "access", ip, Some("Mozilla/5.0"));
/// ```
#[derive(Clone)]
pub struct LoginAuditLogger {
    /// A monitor's logger; `None` for the process's ([`get_login_audit_logger`]), which
    /// finds the running monitor's at each call.
    own: Option<Arc<Parts>>,
}

/// What a monitor's logger writes to and counts in.
#[derive(Clone)]
struct Parts {
    auditor: Arc<Auditor>,
    /// Where `log_lockout` counts (the metric and the snapshot), when a monitor is behind it.
    lockouts: Option<(Arc<AtomicU64>, Arc<crate::stats::Stats>)>,
    /// The alert engine, told of the application's lockouts (`AuthLockoutSpike`).
    alerts: Option<authwatch_alerts::AlertEngine>,
    /// Where the users it sees are counted (`auth.users.active`).
    active: Option<Arc<crate::active::ActiveUsers>>,
}

impl fmt::Debug for LoginAuditLogger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("LoginAuditLogger");
        match &self.own {
            Some(p) => d.field("auditor", &p.auditor),
            None => d.field("follows", &"the running monitor"),
        };
        d.finish_non_exhaustive()
    }
}

impl Parts {
    fn new(auditor: Arc<Auditor>) -> Self {
        Self {
            auditor,
            lockouts: None,
            alerts: None,
            active: None,
        }
    }

    /// Builds, fills, counts and queues one record of the application.
    fn log(
        &self,
        e: &AppEvent,
        user_id: Option<&str>,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
        fill: impl FnOnce(&mut AuditRecord),
    ) {
        let mut r = AuditRecord::new(e.name, class_of(e.outcome), FROM_APPLICATION);
        r.set_trace(crate::tracing_ctx::current());
        r.user_id = user_id.map(|u| self.auditor.key.apply(u));
        r.client_address = ip;
        r.user_agent = user_agent.map(|ua| sanitize(ua, MAX_USER_AGENT));
        r.operation = Some(e.op.as_str());
        r.outcome = Some(e.outcome.as_str());
        fill(&mut r);
        if e.active {
            if let (Some(a), Some(u)) = (&self.active, &r.user_id) {
                a.insert(u, authwatch_layer::now());
            }
        }
        if e.outcome == Outcome::Failure(FailureReason::LockedOut) {
            if let Some((metric, stats)) = &self.lockouts {
                metric.fetch_add(1, Ordering::Relaxed);
                stats.add_lockout(e.op);
            }
            if let Some(a) = &self.alerts {
                a.record_lockout();
            }
        }
        self.auditor.send(r);
    }
}

impl LoginAuditLogger {
    pub(crate) fn new(auditor: Arc<Auditor>) -> Self {
        Self {
            own: Some(Arc::new(Parts::new(auditor))),
        }
    }

    /// The monitor's parts while `build` sets them (not shared yet: no copy is made).
    fn parts_mut(&mut self) -> Option<&mut Parts> {
        self.own.as_mut().map(Arc::make_mut)
    }

    pub(crate) fn with_alerts(mut self, e: Option<authwatch_alerts::AlertEngine>) -> Self {
        if let Some(p) = self.parts_mut() {
            p.alerts = e;
        }
        self
    }

    pub(crate) fn with_active_users(mut self, a: Arc<crate::active::ActiveUsers>) -> Self {
        if let Some(p) = self.parts_mut() {
            p.active = Some(a);
        }
        self
    }

    pub(crate) fn with_lockouts(
        mut self,
        metric: Arc<AtomicU64>,
        stats: Arc<crate::stats::Stats>,
    ) -> Self {
        if let Some(p) = self.parts_mut() {
            p.lockouts = Some((metric, stats));
        }
        self
    }

    /// Runs `f` on the parts this logger writes to: its monitor's, or for the process's
    /// logger, the running monitor's at this call.
    fn with<R>(&self, f: impl FnOnce(&Parts) -> R) -> R {
        match &self.own {
            Some(p) => f(p),
            None => f(&current()),
        }
    }

    /// One record of the application, to the parts this logger writes to.
    fn log(
        &self,
        e: &AppEvent,
        user_id: Option<&str>,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
        fill: impl FnOnce(&mut AuditRecord),
    ) {
        self.with(|p| p.log(e, user_id, ip, user_agent, fill));
    }

    /// A successful login.
    pub fn log_login_success(&self, user_id: &str, ip: Option<IpAddr>, user_agent: Option<&str>) {
        self.log(&LOGIN_SUCCESS, Some(user_id), ip, user_agent, |_| {});
    }

    /// A failed login and why (`"Invalid credentials"`, …).
    pub fn log_login_failure(
        &self,
        user_id: &str,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
        reason: &str,
    ) {
        self.log(&LOGIN_FAILURE, Some(user_id), ip, user_agent, |r| {
            r.error_type = Some(sanitize(reason, MAX_TEXT));
        });
    }

    /// A token issued (`token_type`: `"access"`, `"refresh"`, …). The token itself is never
    /// taken.
    pub fn log_token_issued(
        &self,
        user_id: &str,
        token_type: &str,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
    ) {
        self.log(&TOKEN_ISSUED, Some(user_id), ip, user_agent, |r| {
            r.token_type = Some(sanitize(token_type, MAX_TEXT));
        });
    }

    /// A logout.
    pub fn log_logout(&self, user_id: &str, ip: Option<IpAddr>, user_agent: Option<&str>) {
        self.log(&LOGOUT, Some(user_id), ip, user_agent, |_| {});
    }

    /// A new account.
    pub fn log_registration(&self, user_id: &str, ip: Option<IpAddr>, user_agent: Option<&str>) {
        self.log(&REGISTRATION, Some(user_id), ip, user_agent, |_| {});
    }

    /// An account locked, and why. Also counts in `auth.lockout.count` (without a route label)
    /// and in the snapshot's `locked_out` for logins.
    pub fn log_lockout(
        &self,
        user_id: &str,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
        reason: &str,
    ) {
        self.log(&LOCKOUT, Some(user_id), ip, user_agent, |r| {
            r.error_type = Some(sanitize(reason, MAX_TEXT));
        });
    }

    /// A request refused by a rate limit (the user, when known).
    pub fn log_rate_limited(
        &self,
        user_id: Option<&str>,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
    ) {
        self.log(&RATE_LIMITED, user_id, ip, user_agent, |_| {});
    }

    /// A password reset (requested or completed).
    pub fn log_password_reset(&self, user_id: &str, ip: Option<IpAddr>, user_agent: Option<&str>) {
        self.log(&PASSWORD_RESET, Some(user_id), ip, user_agent, |_| {});
    }

    /// A query that took longer than the slow-query threshold (a security-class record, so
    /// it is kept for a year next to the failures it may explain).
    pub(crate) fn log_slow_query(&self, name: &str, took: Duration) {
        let mut r = AuditRecord::new("auth.db.slow_query", AuditClass::Security, FROM_APPLICATION);
        r.db_query = Some(sanitize(name, MAX_TEXT));
        r.duration_ms = Some(took.as_secs_f64() * 1000.0);
        self.with(|p| p.auditor.send(r));
    }

    /// Waits until every record logged so far is written (and, with a local log, flushed).
    /// For tests and shutdown; the calls above never wait. The process's logger waits for
    /// the running monitor's.
    pub fn sync(&self) {
        self.with(|p| p.auditor.sync());
    }

    /// Records dropped because the queue was full (the process's logger: the running
    /// monitor's count).
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.with(|p| p.auditor.dropped())
    }

    /// Stops the monitor's writer. The process's logger owns none: it has nothing to stop.
    pub(crate) fn shutdown(&self) -> bool {
        self.own.as_ref().is_none_or(|p| p.auditor.shutdown())
    }
}

/// What the process's logger ([`get_login_audit_logger`]) writes to.
struct Global {
    /// The monitors built, oldest first, held weakly: the global keeps none of them (their
    /// writer thread, their detector) alive after it is dropped.
    monitors: Vec<std::sync::Weak<Parts>>,
    /// Where records go while no monitor runs: `tracing` events only. Started at its first
    /// record, dropped (its thread ending) when a monitor is built.
    stand_in: Option<Arc<Parts>>,
}

static GLOBAL: Mutex<Global> = Mutex::new(Global {
    monitors: Vec::new(),
    stand_in: None,
});

/// Each `AuthWatch` built becomes the one the process's logger writes to, until it is shut
/// down or dropped: a monitor restarted (shut down, then built again) takes over at once.
pub(crate) fn set_global(l: &LoginAuditLogger) {
    let Some(p) = &l.own else { return };
    let mut g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    g.monitors.retain(|m| m.strong_count() > 0);
    g.monitors.push(Arc::downgrade(p));
    g.stand_in = None;
}

/// The parts the process's logger writes to now: the newest monitor still running, else the
/// stand-in.
fn current() -> Arc<Parts> {
    let mut g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    let running = g
        .monitors
        .iter()
        .rev()
        .filter_map(std::sync::Weak::upgrade)
        .find(|p| !p.auditor.closed.load(Ordering::Relaxed));
    if let Some(p) = running {
        return p;
    }
    g.stand_in
        .get_or_insert_with(|| {
            let a = Auditor::start(
                Outputs {
                    otel: None,
                    file: None,
                },
                DEFAULT_QUEUE,
                None,
            )
            // No thread to be had: records counted as dropped, rather than a panic in a login
            // handler.
            .unwrap_or_else(|_| Auditor::disconnected());
            Arc::new(Parts::new(a))
        })
        .clone()
}

/// The process's audit logger, as the spec calls it. Each call of the logger goes to the
/// newest [`AuthWatch`] still running (built and not shut down), so a logger obtained once and
/// kept (before the monitor was built, or before it was restarted) follows the live monitor,
/// and keeps none alive. While none runs, its records are written as `tracing` events only.
///
/// [`AuthWatch`]: crate::AuthWatch
#[must_use]
pub fn get_login_audit_logger() -> LoginAuditLogger {
    LoginAuditLogger { own: None }
}
