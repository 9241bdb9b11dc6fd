//! The audit trail: one structured record per auth event, as `tracing` events, OpenTelemetry
//! log records and (with [`AuthWatchBuilder::audit_dir`](crate::AuthWatchBuilder::audit_dir))
//! a local tamper-evident log.
//!
//! Records come from two places: the layer, for every failed, rate-limited, locked-out or
//! refused auth request (every auth request with
//! [`audit_request_successes`](crate::AuthWatchBuilder::audit_request_successes); no user
//! id: it reads no bodies), and the [`LoginAuditLogger`] your handlers call when they know who
//! it was. Either way the request path only queues the record: a worker thread formats and
//! writes it, and a full queue drops the record and counts it (`auth.audit.dropped.count`)
//! rather than wait.
//!
//! # Fields
//!
//! | field | what |
//! |---|---|
//! | `event.name` | `auth.login.success`, `auth.login.failure`, `auth.token.issued`, `auth.logout`, `auth.registration`, `auth.lockout`, `auth.rate_limited`, `auth.password_reset`, `auth.request` (the layer's), `auth.db.slow_query` |
//! | `audit.class` | `authentication` (kept 90 days) or `security` (1 year: failures, lockouts, rate limiting, invalid tokens) |
//! | `audit.retention_days` | 90 or 365 |
//! | `audit.source` | `layer`, `token_guard` or `application` |
//! | `user.id` | as given, or `hmac-sha256:<hex>` with [`AuthWatchBuilder::audit_key`](crate::AuthWatchBuilder::audit_key) (recommended: the user field of a failed login sometimes holds a password typed in the wrong box) |
//! | `client.address` | the client address under the `ClientIp` rules |
//! | `user_agent.original` | at most 256 bytes, control characters escaped |
//! | `error.type` | the failure reason (`invalid_credentials`, … or the application's words) |
//! | `auth.operation`, `auth.outcome`, `http.route`, `http.request.method`, `auth.duration_ms` | the layer's records |
//! | `auth.token.type` | `log_token_issued` |
//! | `db.query.name` | `auth.db.slow_query` records from [`AuthWatch::time_query`](crate::AuthWatch::time_query) |
//!
//! Never a password, token, cookie or `Authorization` header: the layer reads none of them, and
//! the logger's calls take none.

mod buffers;
mod file;
mod logger;
mod otlp;
mod record;
mod sanitize;
mod sink;
#[cfg(test)]
mod tests;
mod worker;

pub(crate) use file::security_files;
pub use file::{
    verify, verify_bytes, verify_decrypting, verify_with_checkpoints, AuditFlush, Checkpoint,
    FileSettings, Identities, Tamper, VerifyError, VerifyReport, CHECKPOINT_FILE, SEAL_RECORD,
};
pub use logger::{get_login_audit_logger, LoginAuditLogger};
pub use record::{AuditClass, AuditRecord};
pub use sanitize::{sanitize, MAX_TEXT, MAX_USER_AGENT};
pub use worker::DEFAULT_QUEUE;

pub(crate) use logger::set_global;
// The builder names `LogExport` only without an OTLP transport (with one, the pipeline's
// export is used as it is).
#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
pub(crate) use otlp::LogExport;
pub(crate) use otlp::OtelOut;
pub(crate) use sink::AuditSink;
pub(crate) use worker::{Auditor, Outputs};
