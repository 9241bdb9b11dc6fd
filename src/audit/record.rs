//! The record schema: [`AuditRecord`], its [`AuditClass`], and the kinds of records the
//! application writes.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use authwatch_layer::{AuthOp, FailureReason, Outcome};
use serde::Serialize;

/// How long a record is kept: the spec's two retention classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AuditClass {
    /// Authentication events: 90 days.
    Authentication,
    /// Security events (failures, lockouts, rate limiting, invalid tokens, brute force): 1 year.
    Security,
}

impl AuditClass {
    /// Both classes.
    pub const ALL: [Self; 2] = [Self::Authentication, Self::Security];

    /// `authentication` or `security`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Authentication => "authentication",
            Self::Security => "security",
        }
    }

    /// The spec's retention: 90 days or 1 year.
    #[must_use]
    pub const fn retention_days(self) -> u32 {
        match self {
            Self::Authentication => 90,
            Self::Security => 365,
        }
    }
}

impl fmt::Display for AuditClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit record, as written (field names in [the module docs](super)).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// `event.name`.
    #[serde(rename = "event.name")]
    pub name: &'static str,
    /// When it happened (RFC 3339 in the JSON).
    #[serde(rename = "time", serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// `audit.class`.
    #[serde(rename = "audit.class")]
    pub class: AuditClass,
    /// `audit.source`: `layer` or `application`.
    #[serde(rename = "audit.source")]
    pub source: &'static str,
    /// `user.id`, keyed when a key is set.
    #[serde(rename = "user.id", skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// `client.address`.
    #[serde(rename = "client.address", skip_serializing_if = "Option::is_none")]
    pub client_address: Option<IpAddr>,
    /// `user_agent.original`, bounded and escaped.
    #[serde(
        rename = "user_agent.original",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_agent: Option<String>,
    /// `error.type`.
    #[serde(rename = "error.type", skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// `auth.operation`.
    #[serde(rename = "auth.operation", skip_serializing_if = "Option::is_none")]
    pub operation: Option<&'static str>,
    /// `auth.outcome`.
    #[serde(rename = "auth.outcome", skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// `http.route` (a template).
    #[serde(rename = "http.route", skip_serializing_if = "Option::is_none")]
    pub route: Option<Box<str>>,
    /// `http.request.method`.
    #[serde(
        rename = "http.request.method",
        skip_serializing_if = "Option::is_none"
    )]
    pub method: Option<&'static str>,
    /// `auth.duration_ms`.
    #[serde(rename = "auth.duration_ms", skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// `auth.token.type`.
    #[serde(rename = "auth.token.type", skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// `db.query.name`, for slow-query records.
    #[serde(rename = "db.query.name", skip_serializing_if = "Option::is_none")]
    pub db_query: Option<String>,
    /// `auth.block.source`, for block records: `alert`, `manual`, `fleet` or `crowdsec`.
    #[serde(rename = "auth.block.source", skip_serializing_if = "Option::is_none")]
    pub block_source: Option<&'static str>,
    /// `auth.block.reason`, for block records: the alert, or what the person said.
    #[serde(rename = "auth.block.reason", skip_serializing_if = "Option::is_none")]
    pub block_reason: Option<String>,
    /// `auth.block.ttl_s`, for block records: how long the block lasts, in seconds.
    #[serde(rename = "auth.block.ttl_s", skip_serializing_if = "Option::is_none")]
    pub block_ttl_s: Option<u64>,
    /// `auth.block.refused`, for the record of a block's end: the requests it refused (one
    /// record per block, not one per refusal).
    #[serde(rename = "auth.block.refused", skip_serializing_if = "Option::is_none")]
    pub block_refused: Option<u64>,
    /// `auth.incident`, for incident records: the alert, its labels, times, values and the
    /// actions taken (see [`incidents`](crate::incidents)).
    #[serde(rename = "auth.incident", skip_serializing_if = "Option::is_none")]
    pub incident: Option<serde_json::Value>,
    /// `auth.access`, for the records of access to the monitoring endpoints: the endpoint,
    /// whether it was allowed, the token's fingerprint, how many requests in the hour.
    #[serde(rename = "auth.access", skip_serializing_if = "Option::is_none")]
    pub access: Option<serde_json::Value>,
    /// `auth.audit.checkpoint`, for the checkpoints of the local log sent to the collector
    /// (see [`Checkpoint`](crate::audit::Checkpoint)).
    #[serde(
        rename = "auth.audit.checkpoint",
        skip_serializing_if = "Option::is_none"
    )]
    pub checkpoint: Option<serde_json::Value>,
    /// `trace_id`: the trace of the request the record belongs to (32 hex digits), when an
    /// OpenTelemetry tracing layer is installed (`Pipeline::tracing_layer`): jump from the log
    /// line to its trace.
    #[serde(rename = "trace_id", skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// `span_id`: the span (16 hex digits) that was current.
    #[serde(rename = "span_id", skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    #[serde(skip)]
    pub(crate) trace: Option<crate::tracing_ctx::TraceCtx>,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    // A clock outside 1970..=9999 clamps rather than fail the writer.
    let max = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    s.collect_str(&humantime::format_rfc3339_micros(
        (*t).clamp(SystemTime::UNIX_EPOCH, max),
    ))
}

impl AuditRecord {
    pub(super) fn set_trace(&mut self, t: Option<crate::tracing_ctx::TraceCtx>) {
        if let Some(t) = t {
            self.trace_id = Some(t.trace_id.to_string());
            self.span_id = Some(t.span_id.to_string());
            self.trace = Some(t);
        }
    }

    pub(crate) fn new(name: &'static str, class: AuditClass, source: &'static str) -> Self {
        Self::at(name, class, source, SystemTime::now())
    }

    /// A record of an event at `time` (the layer's records: no clock read per record).
    pub(super) fn at(
        name: &'static str,
        class: AuditClass,
        source: &'static str,
        time: SystemTime,
    ) -> Self {
        Self {
            name,
            time,
            class,
            source,
            user_id: None,
            client_address: None,
            user_agent: None,
            error_type: None,
            operation: None,
            outcome: None,
            route: None,
            method: None,
            duration_ms: None,
            token_type: None,
            db_query: None,
            block_source: None,
            block_reason: None,
            block_ttl_s: None,
            block_refused: None,
            incident: None,
            access: None,
            checkpoint: None,
            trace_id: None,
            span_id: None,
            trace: None,
        }
    }
}

/// A record's fields, borrowed: what the worker writes, from an [`AuditRecord`] or straight from
/// a layer record (no `String` per field, nothing to free).
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordView<'a> {
    pub(super) name: &'static str,
    /// When it happened, in nanoseconds since the Unix epoch (as OTLP has it; 0 before the
    /// epoch).
    pub(super) time_unix_nano: u64,
    pub(super) class: AuditClass,
    pub(super) source: &'static str,
    pub(super) user_id: Option<&'a str>,
    pub(super) client_address: Option<IpAddr>,
    pub(super) user_agent: Option<&'a str>,
    pub(super) error_type: Option<&'a str>,
    pub(super) operation: Option<&'static str>,
    pub(super) outcome: Option<&'static str>,
    pub(super) route: Option<&'a str>,
    pub(super) method: Option<&'static str>,
    pub(super) duration_ms: Option<f64>,
    pub(super) token_type: Option<&'a str>,
    pub(super) db_query: Option<&'a str>,
    pub(super) block_source: Option<&'static str>,
    pub(super) block_reason: Option<&'a str>,
    pub(super) block_ttl_s: Option<u64>,
    pub(super) block_refused: Option<u64>,
    pub(super) incident: Option<&'a serde_json::Value>,
    pub(super) access: Option<&'a serde_json::Value>,
    pub(super) checkpoint: Option<&'a serde_json::Value>,
    pub(super) trace_id: Option<&'a str>,
    pub(super) span_id: Option<&'a str>,
    pub(super) trace: Option<crate::tracing_ctx::TraceCtx>,
}

impl AuditRecord {
    pub(super) fn view(&self) -> RecordView<'_> {
        RecordView {
            name: self.name,
            time_unix_nano: unix_nanos(self.time),
            class: self.class,
            source: self.source,
            user_id: self.user_id.as_deref(),
            client_address: self.client_address,
            user_agent: self.user_agent.as_deref(),
            error_type: self.error_type.as_deref(),
            operation: self.operation,
            outcome: self.outcome,
            route: self.route.as_deref(),
            method: self.method,
            duration_ms: self.duration_ms,
            token_type: self.token_type.as_deref(),
            db_query: self.db_query.as_deref(),
            block_source: self.block_source,
            block_reason: self.block_reason.as_deref(),
            block_ttl_s: self.block_ttl_s,
            block_refused: self.block_refused,
            incident: self.incident.as_ref(),
            access: self.access.as_ref(),
            checkpoint: self.checkpoint.as_ref(),
            trace_id: self.trace_id.as_deref(),
            span_id: self.span_id.as_deref(),
            trace: self.trace,
        }
    }
}

impl RecordView<'_> {
    /// The record, owned (for the local log).
    pub(super) fn to_record(self) -> AuditRecord {
        AuditRecord {
            name: self.name,
            time: SystemTime::UNIX_EPOCH + Duration::from_nanos(self.time_unix_nano),
            class: self.class,
            source: self.source,
            user_id: self.user_id.map(str::to_owned),
            client_address: self.client_address,
            user_agent: self.user_agent.map(str::to_owned),
            error_type: self.error_type.map(str::to_owned),
            operation: self.operation,
            outcome: self.outcome,
            route: self.route.map(Box::from),
            method: self.method,
            duration_ms: self.duration_ms,
            token_type: self.token_type.map(str::to_owned),
            db_query: self.db_query.map(str::to_owned),
            block_source: self.block_source,
            block_reason: self.block_reason.map(str::to_owned),
            block_ttl_s: self.block_ttl_s,
            block_refused: self.block_refused,
            incident: self.incident.cloned(),
            access: self.access.cloned(),
            checkpoint: self.checkpoint.cloned(),
            trace_id: self.trace_id.map(str::to_owned),
            span_id: self.span_id.map(str::to_owned),
            trace: self.trace,
        }
    }
}

/// `t` in nanoseconds since the Unix epoch: 0 before it, saturated past 2554.
pub(super) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `audit.source` of the records your code writes (the logger, timed queries); the layer's
/// are `layer` and `token_guard`.
pub(crate) const FROM_APPLICATION: &str = "application";

/// The class of a layer event: failures, rate limiting and invalid tokens are security events.
pub(super) fn class_of(o: Outcome) -> AuditClass {
    match o {
        Outcome::Success | Outcome::Cancelled => AuditClass::Authentication,
        _ => AuditClass::Security,
    }
}

/// One kind of application record: its name, operation and outcome (which give its class),
/// and whether it shows the user active (`auth.users.active`).
pub(super) struct AppEvent {
    pub(super) name: &'static str,
    pub(super) op: AuthOp,
    pub(super) outcome: Outcome,
    pub(super) active: bool,
}

const fn app_event(name: &'static str, op: AuthOp, outcome: Outcome, active: bool) -> AppEvent {
    AppEvent {
        name,
        op,
        outcome,
        active,
    }
}

pub(super) const LOGIN_SUCCESS: AppEvent =
    app_event("auth.login.success", AuthOp::Login, Outcome::Success, true);
pub(super) const LOGIN_FAILURE: AppEvent = app_event(
    "auth.login.failure",
    AuthOp::Login,
    Outcome::Failure(FailureReason::InvalidCredentials),
    false,
);
pub(super) const TOKEN_ISSUED: AppEvent = app_event(
    "auth.token.issued",
    AuthOp::TokenRefresh,
    Outcome::Success,
    true,
);
pub(super) const LOGOUT: AppEvent =
    app_event("auth.logout", AuthOp::Logout, Outcome::Success, true);
pub(super) const REGISTRATION: AppEvent = app_event(
    "auth.registration",
    AuthOp::Registration,
    Outcome::Success,
    true,
);
pub(super) const LOCKOUT: AppEvent = app_event(
    "auth.lockout",
    AuthOp::Login,
    Outcome::Failure(FailureReason::LockedOut),
    false,
);
pub(super) const RATE_LIMITED: AppEvent = app_event(
    "auth.rate_limited",
    AuthOp::Login,
    Outcome::RateLimited,
    false,
);
pub(super) const PASSWORD_RESET: AppEvent = app_event(
    "auth.password_reset",
    AuthOp::PasswordReset,
    Outcome::Success,
    false,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(AuditClass::Authentication.retention_days(), 90);
        assert_eq!(AuditClass::Security.retention_days(), 365);
        assert_eq!(class_of(Outcome::RateLimited), AuditClass::Security);
        assert_eq!(
            class_of(Outcome::Failure(FailureReason::InvalidToken)),
            AuditClass::Security
        );
        assert_eq!(class_of(Outcome::Success), AuditClass::Authentication);
    }
}
