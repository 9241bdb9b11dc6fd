//! What can go wrong building or stopping a monitor.

use crate::RouteError;

/// Why [`AuthWatchBuilder::build`](crate::AuthWatchBuilder::build) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A route template is invalid or two conflict; the message names the route.
    #[error(transparent)]
    Routes(#[from] RouteError),
    /// The OpenTelemetry pipeline could not be built (an invalid `OTEL_*` variable, an
    /// endpoint the exporter rejects).
    #[error(transparent)]
    Telemetry(#[from] authwatch_otel::PipelineError),
    /// The audit log could not be started (its folder cannot be created or opened).
    #[error("audit log: {0}")]
    Audit(#[from] std::io::Error),
    /// The GeoIP database could not be read.
    #[error("{0}")]
    GeoIp(String),
    /// A setting that cannot work (an empty metrics token, which would protect nothing).
    #[error("invalid setting: {0}")]
    Config(String),
    /// The configuration file cannot be read or is wrong: the file, the line, the key, why.
    #[error("configuration: {0}")]
    ConfigFile(#[from] crate::config::ConfigError),
}

/// Why [`AuthWatch::shutdown`](crate::AuthWatch::shutdown) reported a problem. The exporters are stopped either way.
#[derive(Debug, thiserror::Error)]
#[error("authwatch shutdown: {0}")]
pub struct ShutdownError(pub(crate) String);
