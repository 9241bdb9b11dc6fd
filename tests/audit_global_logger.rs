//! `get_login_audit_logger()` follows the running monitor: after a restart (shut down, built
//! again with another `audit_dir`) the process's logger writes to the new monitor's log, also
//! through a logger a handler obtained before the restart.
//!
//! One test in its own binary: the process's logger is process-wide.

mod common;

use std::path::Path;

use common::tempdir;

use authwatch::AuthWatch;

/// Every line of the local log in `dir`.
fn log_text(dir: &Path) -> String {
    let mut text = String::new();
    for f in std::fs::read_dir(dir).unwrap() {
        text += &std::fs::read_to_string(f.unwrap().path()).unwrap();
    }
    text
}

fn monitor(dir: &Path) -> AuthWatch {
    AuthWatch::builder()
        .otlp(false)
        .audit_dir(dir)
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_process_logger_follows_a_restarted_monitor() {
    let (a, b) = (tempdir("global-a"), tempdir("global-b"));
    let first = monitor(&a);
    // A handler that took the process's logger once, at startup, and kept it.
    let kept = authwatch::get_login_audit_logger();
    kept.log_login_failure("before-restart", None, None, "Invalid credentials");
    kept.sync();
    first.shutdown().await.unwrap();
    drop(first);

    let second = monitor(&b);
    authwatch::get_login_audit_logger().log_login_failure(
        "fresh-after-restart",
        None,
        None,
        "Invalid credentials",
    );
    kept.log_login_failure("kept-after-restart", None, None, "Invalid credentials");
    authwatch::get_login_audit_logger().sync();
    second.shutdown().await.unwrap();
    drop(second);

    let (in_a, in_b) = (log_text(&a), log_text(&b));
    assert!(in_a.contains("before-restart"), "{in_a}");
    for user in ["fresh-after-restart", "kept-after-restart"] {
        assert!(in_b.contains(user), "{user} not in the second log: {in_b}");
        assert!(!in_a.contains(user), "{user} in the first log");
    }
    // No monitor running: the logger still works (tracing events only), and never panics.
    kept.log_login_failure("no-monitor", None, None, "Invalid credentials");
    kept.sync();
    assert_eq!(kept.dropped(), 0);
    assert!(!log_text(&b).contains("no-monitor"));
}
