//! A monitor built outside any Tokio runtime (plain `main`, before the service's runtime)
//! still runs its health checks in the background: `AuthServiceDown` fires with no probe, and
//! the thread that ran them ends with the monitor.
//!
//! One test in its own binary: it counts the process's `authwatch-health` threads.

use std::time::{Duration, Instant};

use authwatch::health::{Details, HealthCheck};
use authwatch::{AlertConfig, AuthWatch};

/// Polls `f` every 20 ms for up to `limit`; whether it became true.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// The process's threads named `authwatch-health` (the kernel keeps 15 bytes of a name).
#[cfg(target_os = "linux")]
fn health_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "authwatch-healt")
        .count()
}

#[test]
fn a_monitor_built_outside_a_runtime_runs_its_checks_and_fires_auth_service_down() {
    assert!(tokio::runtime::Handle::try_current().is_err(), "no runtime");
    let watch = AuthWatch::builder()
        .otlp(false)
        .health_check(HealthCheck::new("database", || async {
            Err::<Details, _>("connection refused")
        }))
        // A fresh run at every tick: `AuthServiceDown` fires after 3 failed runs in a row.
        .health_cache(Duration::from_millis(10))
        .alerts(AlertConfig::new().tick(Duration::from_millis(20)))
        .build()
        .unwrap();
    let fired = eventually(Duration::from_secs(5), || {
        watch
            .snapshot()
            .alerts()
            .iter()
            .any(|a| a.name == "AuthServiceDown")
    });
    assert!(
        fired,
        "AuthServiceDown never fired: the checks did not run; firing: {:?}",
        watch.snapshot().alerts()
    );
    #[cfg(target_os = "linux")]
    {
        assert_eq!(health_threads(), 1, "the checks ran on authwatch's thread");
        // The thread does not keep the checks (and what they hold) alive: it ends with them.
        drop(watch);
        assert!(
            eventually(Duration::from_secs(5), || health_threads() == 0),
            "the health thread outlived the monitor"
        );
    }
}
