//! How [`AuthWatchBuilder::build`](crate::AuthWatchBuilder::build) starts each subsystem: one
//! file per subsystem, each starting its part and registering the gauges that read it on every
//! meter of the pipeline (OTLP and `/metrics`).

pub(crate) mod alerts;
pub(crate) mod audit;
pub(crate) mod blocks;
pub(crate) mod fleet;
pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod users;
