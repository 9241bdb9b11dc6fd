//! The metric catalog: every instrument authwatch records, with its OpenTelemetry name, kind,
//! unit, attributes and the Prometheus name a collector or `/metrics` derives from it.
//!
//! ```
//! use authwatch::metrics::{InstrumentKind, CATALOG};
//!
//! let login = CATALOG
//!     .iter()
//!     .find(|m| m.name == "auth.login.failure.count")
//!     .unwrap();
//! assert_eq!(login.kind, InstrumentKind::Counter);
//! assert_eq!(login.prometheus_name(), "auth_login_failure_count_total");
//! ```

pub use authwatch_otel::{
    attr, def, markdown_table, InstrumentKind, Measure, MetricDef, Quantile, CATALOG,
    LATENCY_BUCKETS_MS, MAX_QUERY_NAMES, SCOPE,
};
