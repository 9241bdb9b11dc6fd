//! The audit trail: its writer (local log, OTLP log export) and the counters of what it lost.

use std::sync::Arc;

use authwatch_otel::{register_u64_counter, Measure, Pipeline};

use crate::audit;
use crate::BuildError;

/// The audit settings, from the builder.
pub(crate) struct Settings {
    pub(crate) file: Option<audit::FileSettings>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) queue: usize,
}

/// The audit writer, with `auth.audit.dropped.count` and `auth.audit.export.lost.count` on
/// every meter.
///
/// # Errors
///
/// The local log's folder cannot be created or opened, or the log export cannot be built.
pub(crate) fn start(
    pipeline: &Pipeline,
    settings: Settings,
) -> Result<Arc<audit::Auditor>, BuildError> {
    // The audit trail's OTLP copy has an export of its own (see `LogExport`).
    #[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
    let export = pipeline.log_export("authwatch::audit")?.map(Arc::new);
    #[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
    let export: Option<Arc<audit::LogExport>> = None;
    let auditor = audit::Auditor::start(
        audit::Outputs {
            otel: export.clone().map(|export| audit::OtelOut { export }),
            file: settings.file,
        },
        settings.queue,
        settings.key,
    )?;
    for meter in pipeline.meters() {
        let a = Arc::downgrade(&auditor);
        register_u64_counter(meter, Measure::AuditDropped, move || {
            a.upgrade().map(|a| a.dropped())
        });
        // Always a series (0 without an OTLP log export), like every catalog instrument.
        let x = export.as_ref().map(Arc::downgrade);
        register_u64_counter(meter, Measure::AuditExportLost, move || {
            x.as_ref()
                .map_or(Some(0), |x| x.upgrade().map(|x| x.lost()))
        });
    }
    Ok(auditor)
}
