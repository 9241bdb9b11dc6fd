//! Process resources (CPU time, resident memory, open file descriptors) as gauges read at
//! collection time, named as OpenTelemetry's semantic conventions name them. Linux only (read
//! through the `procfs` crate); elsewhere nothing is registered.

use opentelemetry::metrics::Meter;

/// Registers `process.cpu.time`, `process.memory.usage` and
/// `process.open_file_descriptor.count` on `meter` (Linux; a no-op elsewhere). A reading that
/// fails (a restricted `/proc`) is skipped, not an error.
pub fn register_process_gauges(meter: &Meter) {
    #[cfg(target_os = "linux")]
    linux::register(meter);
    #[cfg(not(target_os = "linux"))]
    let _ = meter;
}

#[cfg(target_os = "linux")]
mod linux {
    use authwatch_layer::catalog::{attr, def, Measure};
    use opentelemetry::metrics::Meter;
    use opentelemetry::KeyValue;

    pub(super) fn register(meter: &Meter) {
        let ticks = procfs::ticks_per_second() as f64;
        let page = procfs::page_size();
        let d = def(Measure::ProcessCpuTime);
        meter
            .f64_observable_counter(d.name)
            .with_description(d.description)
            .with_unit(d.unit)
            .with_callback(move |obs| {
                if let Ok(stat) = procfs::process::Process::myself().and_then(|p| p.stat()) {
                    obs.observe(
                        stat.utime as f64 / ticks,
                        &[KeyValue::new(attr::CPU_MODE, "user")],
                    );
                    obs.observe(
                        stat.stime as f64 / ticks,
                        &[KeyValue::new(attr::CPU_MODE, "system")],
                    );
                }
            })
            .build();
        let d = def(Measure::ProcessMemory);
        meter
            .u64_observable_gauge(d.name)
            .with_description(d.description)
            .with_unit(d.unit)
            .with_callback(move |obs| {
                if let Ok(stat) = procfs::process::Process::myself().and_then(|p| p.stat()) {
                    obs.observe(stat.rss * page, &[]);
                }
            })
            .build();
        let d = def(Measure::ProcessOpenFiles);
        meter
            .u64_observable_gauge(d.name)
            .with_description(d.description)
            .with_unit(d.unit)
            .with_callback(move |obs| {
                if let Ok(n) = procfs::process::Process::myself().and_then(|p| p.fd_count()) {
                    obs.observe(n as u64, &[]);
                }
            })
            .build();
    }
}
