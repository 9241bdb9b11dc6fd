//! The audit trail: the logger's fields, the layer's automatic records, escaping, keyed user
//! ids, the local hash-chained log and `authwatch audit verify` against every kind of
//! tampering, pruning by age, a full queue, and a writer killed mid-write.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use authwatch::audit::{verify, verify_bytes, AuditFlush, FileSettings, Tamper};
use authwatch::AuthWatch;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::*;
use tracing_subscriber::layer::SubscriberExt as _;

type Fields = BTreeMap<String, String>;

/// Every `authwatch::audit` event any thread emits (the writer is its own thread, so the
/// subscriber is the global one).
fn events() -> &'static Mutex<Vec<(tracing::Level, Fields)>> {
    static EVENTS: OnceLock<Arc<Mutex<Vec<(tracing::Level, Fields)>>>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let store = Arc::new(Mutex::new(Vec::new()));
        let s = store.clone();
        let layer = Capture(s);
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("one global subscriber");
        store
    })
}

struct Capture(Arc<Mutex<Vec<(tracing::Level, Fields)>>>);

struct Visit<'a>(&'a mut Fields);

impl tracing::field::Visit for Visit<'_> {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        self.0.insert(f.name().to_owned(), format!("{v:?}"));
    }
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        self.0.insert(f.name().to_owned(), v.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if e.metadata().target() != "authwatch::audit" {
            return;
        }
        let mut f = Fields::new();
        e.record(&mut Visit(&mut f));
        self.0.lock().unwrap().push((*e.metadata().level(), f));
    }
}

fn find(pred: impl Fn(&Fields) -> bool) -> Vec<(tracing::Level, Fields)> {
    events()
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, f)| pred(f))
        .cloned()
        .collect()
}

#[test]
fn every_logger_call_writes_its_fields() {
    let _ = events();
    let watch = AuthWatch::builder()
        .otlp(false)
        .audit_key("k3y")
        .build()
        .unwrap();
    let a = watch.audit_logger();
    let ip = "203.0.113.9".parse().ok();
    let ua = Some("Mozilla/5.0 (test-every-call)");
    a.log_login_success("u-1", ip, ua);
    a.log_login_failure("u-1", ip, ua, "Invalid credentials");
    a.log_token_issued("u-1", "access", ip, ua);
    a.log_logout("u-1", ip, ua);
    a.log_registration("u-1", ip, ua);
    a.log_lockout("u-1", ip, ua, "too many failures");
    a.log_rate_limited(None, ip, ua);
    a.log_password_reset("u-1", ip, ua);
    a.sync();
    let mine = find(|f| f.get("user_agent.original").map(String::as_str) == ua);
    let by_name: BTreeMap<String, (tracing::Level, Fields)> = mine
        .into_iter()
        .map(|(l, f)| (f["event.name"].clone(), (l, f)))
        .collect();
    let names: Vec<&str> = by_name.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "auth.lockout",
            "auth.login.failure",
            "auth.login.success",
            "auth.logout",
            "auth.password_reset",
            "auth.rate_limited",
            "auth.registration",
            "auth.token.issued"
        ]
    );
    for (name, (level, f)) in &by_name {
        let security = matches!(
            name.as_str(),
            "auth.login.failure" | "auth.lockout" | "auth.rate_limited"
        );
        let (class, days, lvl) = if security {
            ("security", "365", tracing::Level::WARN)
        } else {
            ("authentication", "90", tracing::Level::INFO)
        };
        assert_eq!(f["audit.class"], class, "{name}");
        assert_eq!(f["audit.retention_days"], days, "{name}");
        assert_eq!(*level, lvl, "{name}");
        assert_eq!(f["audit.source"], "application");
        assert_eq!(f["client.address"], "203.0.113.9");
        if name != "auth.rate_limited" {
            // Keyed: never the raw id.
            assert!(f["user.id"].starts_with("hmac-sha256:"), "{name}: {f:?}");
        }
    }
    assert_eq!(
        by_name["auth.login.failure"].1["error.type"],
        "Invalid credentials"
    );
    assert_eq!(by_name["auth.token.issued"].1["auth.token.type"], "access");
    assert!(!by_name["auth.rate_limited"].1.contains_key("user.id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_writes_a_record_per_auth_request_with_hostile_input_escaped() {
    let _ = events();
    let dir = tempdir("audit-layer");
    let watch = AuthWatch::builder()
        .otlp(false)
        .audit_file(FileSettings::new(&dir).flush(AuditFlush::EachRecord))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/login", post(|| async { StatusCode::UNAUTHORIZED }))
        .route("/api/other", post(|| async { "not auth" }))
        .layer(watch.layer());
    let addr = serve(app).await;
    let evil = "evil\", \"user.id\": \"admin\"} INFO forged\u{1b}[2J";
    // A header value can't hold a newline; a quote, an escape and a forged field can.
    send(
        &http1(),
        request("POST", addr, "/login").header("user-agent", evil.replace('\u{1b}', "^[")),
    )
    .await;
    send(&http1(), request("POST", addr, "/api/other")).await;
    watch.audit_logger().sync();
    let recs = find(|f| {
        f.get("http.route").map(String::as_str) == Some("/login")
            && f.get("user_agent.original")
                .is_some_and(|u| u.starts_with("evil"))
    });
    assert_eq!(recs.len(), 1, "{recs:?}");
    let (level, f) = &recs[0];
    // The layer's records are INFO (the handlers' security events are WARN).
    assert_eq!(*level, tracing::Level::INFO);
    assert_eq!(f["event.name"], "auth.request");
    assert_eq!(f["audit.class"], "security");
    assert_eq!(f["audit.source"], "layer");
    assert_eq!(f["auth.operation"], "login");
    assert_eq!(f["auth.outcome"], "failure");
    assert_eq!(f["error.type"], "invalid_credentials");
    assert_eq!(f["http.request.method"], "POST");
    assert_eq!(f["client.address"], "127.0.0.1");
    assert!(!f.contains_key("user.id"), "the layer reads no bodies");
    assert!(
        f["user_agent.original"].contains("evil\\\", \\\"user.id\\\""),
        "{f:?}"
    );
    // The local log has it, as one line, and it verifies; the non-auth route wrote nothing.
    let report = verify(&dir, None).unwrap();
    assert_eq!(report.records, 1, "{report:?}");
    let text = std::fs::read_to_string(only_file(&dir, "security")).unwrap();
    assert_eq!(text.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["user.id"], serde_json::Value::Null);
    assert_eq!(v["seq"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_records_successes_only_when_asked() {
    for successes in [false, true] {
        let dir = tempdir(if successes {
            "audit-successes"
        } else {
            "audit-failures-only"
        });
        let watch = AuthWatch::builder()
            .otlp(false)
            .audit_file(FileSettings::new(&dir).flush(AuditFlush::EachRecord))
            .audit_request_successes(successes)
            .build()
            .unwrap();
        let app = Router::new()
            .route("/api/auth/sign-in/email", post(|| async { StatusCode::OK }))
            .route(
                "/api/auth/sign-in/social",
                post(|| async { StatusCode::UNAUTHORIZED }),
            )
            .layer(watch.layer());
        let addr = serve(app).await;
        for path in ["/api/auth/sign-in/email", "/api/auth/sign-in/social"] {
            for _ in 0..3 {
                send(&http1(), request("POST", addr, path)).await;
            }
        }
        watch.audit_logger().sync();
        let report = verify(&dir, None).unwrap();
        // Three failures always; three successes only when asked.
        assert_eq!(report.records, if successes { 6 } else { 3 }, "{report:?}");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names.iter().any(|n| n.starts_with("authentication")),
            successes,
            "{names:?}"
        );
    }
}

fn only_file(dir: &Path, class: &str) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(class))
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v.pop().unwrap()
}

/// A log of `n` login failures (security class) in `dir`, written with `key`.
fn write_log(dir: &Path, n: usize, key: Option<&str>) -> PathBuf {
    let mut b = AuthWatch::builder()
        .otlp(false)
        .audit_requests(false)
        .audit_file(FileSettings::new(dir).flush(AuditFlush::EachRecord));
    if let Some(k) = key {
        b = b.audit_key(k);
    }
    let watch = b.build().unwrap();
    let a = watch.audit_logger();
    for i in 0..n {
        a.log_login_failure(&format!("u-{i}"), None, None, "Invalid credentials");
    }
    a.sync();
    only_file(dir, "security")
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn rewrite(p: &Path, lines: &[String]) {
    std::fs::write(p, lines.join("\n") + "\n").unwrap();
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_authwatch"))
        .args(args)
        .env_remove("AUTHWATCH_AUDIT_KEY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn verify_finds_every_kind_of_tampering() {
    let dir = tempdir("audit-tamper");
    let file = write_log(&dir, 6, None);
    let good = lines(&file);
    let d = dir.to_str().unwrap();
    let (code, out) = cli(&["audit", "verify", d]);
    assert_eq!(
        (code, out.trim()),
        (
            0,
            "ok: 6 records in 1 files verify, none missing against 1 checkpoints"
        )
    );

    let check = |mutated: Vec<String>, line: usize, kind: Tamper| {
        rewrite(&file, &mutated);
        let e = verify(&dir, None).unwrap_err();
        assert_eq!((e.line, &e.kind), (line, &kind), "{e}");
        // The same content checked in memory finds the same record.
        let bytes = std::fs::read(&file).unwrap();
        let e = verify_bytes(Path::new("mem"), &bytes, None).unwrap_err();
        assert_eq!(
            (e.line, &e.kind, e.file.as_path()),
            (line, &kind, Path::new("mem"))
        );
        let (code, out) = cli(&["audit", "verify", d]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(&format!(":{line}: {kind:?}")), "{out}");
        rewrite(&file, &good);
    };
    // Edited: the reason of record 2 changed.
    let mut m = good.clone();
    m[2] = m[2].replace("Invalid credentials", "Valid credentials");
    check(m, 3, Tamper::Edited);
    // Removed: record 3 gone.
    let mut m = good.clone();
    m.remove(3);
    check(m, 4, Tamper::Removed);
    // Inserted: record 1 repeated.
    let mut m = good.clone();
    m.insert(2, good[1].clone());
    check(m, 3, Tamper::Inserted);
    // Reordered: records 4 and 5 swapped, or 2 and 4.
    let mut m = good.clone();
    m.swap(4, 5);
    check(m, 5, Tamper::Reordered);
    let mut m = good.clone();
    m.swap(2, 4);
    check(m, 3, Tamper::Reordered);
    // (Cutting records off the end is found by the checkpoints: see the next test.)
    // Recomputing the hash after an edit is caught by the next record's `prev`.
    assert_eq!(verify(&dir, None).unwrap().records, 6);
    let bytes = std::fs::read(&file).unwrap();
    let r = verify_bytes(Path::new("mem"), &bytes, None).unwrap();
    assert_eq!((r.files, r.records, r.torn.len()), (1, 6, 0));
    // A record cut mid-write at the end: the five before it verify, the cut is reported.
    let r = verify_bytes(Path::new("mem"), &bytes[..bytes.len() - 9], None).unwrap();
    assert_eq!((r.records, r.torn), (5, vec![PathBuf::from("mem")]));
    assert_eq!(
        verify_bytes(Path::new("mem"), b"", None).unwrap().records,
        0
    );
}

/// The checkpoints find what the chain alone cannot: records cut off the end (with how many),
/// a deleted last day, and a checkpoint forged without the key; an external copy of them (as
/// the collector keeps it) finds a cut even when the local checkpoint was rolled back.
#[test]
fn checkpoints_find_a_cut_a_deleted_last_day_and_a_forged_checkpoint() {
    let dir = tempdir("audit-checkpoints");
    let file = write_log(&dir, 6, Some("s3cret"));
    let keyfile = dir.join("key");
    std::fs::write(&keyfile, "s3cret").unwrap();
    let (d, k) = (dir.to_str().unwrap(), keyfile.to_str().unwrap());
    let good = lines(&file);
    let checkpoints = dir.join(authwatch::audit::CHECKPOINT_FILE);
    let saved = std::fs::read_to_string(&checkpoints).unwrap();
    // The collector's copy, as its log store exports it: the checkpoint as a JSON attribute.
    let external = tempdir("audit-checkpoints-external").join("exported.jsonl");
    let cp: serde_json::Value = serde_json::from_str(saved.lines().next().unwrap()).unwrap();
    std::fs::write(
        &external,
        format!(
            "{}\n",
            serde_json::json!({"event.name": "auth.audit.checkpoint", "auth.audit.checkpoint": cp.to_string()})
        ),
    )
    .unwrap();
    assert_eq!(cp["records"], 6);
    let r = verify(&dir, Some(b"s3cret")).unwrap();
    assert_eq!((r.records, r.checkpoints), (6, 1));

    // The last two records cut off.
    rewrite(&file, &good[..4]);
    let e = verify(&dir, Some(b"s3cret")).unwrap_err();
    assert_eq!((e.line, &e.kind), (5, &Tamper::Truncated), "{e}");
    assert!(e.detail.contains("2 records missing"), "{e}");
    let (code, out) = cli(&["audit", "verify", d, "--key-file", k]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Truncated") && out.contains("2 records missing"),
        "{out}"
    );

    // The forger without the key also rewrites the checkpoint to match the cut: refused.
    let mut forged: serde_json::Value = cp.clone();
    forged["records"] = 4.into();
    forged["head"] = good[3][good[3].len() - 66..good[3].len() - 2].into();
    std::fs::write(&checkpoints, format!("{forged}\n")).unwrap();
    let e = verify(&dir, Some(b"s3cret")).unwrap_err();
    assert_eq!(e.kind, Tamper::ForgedCheckpoint, "{e}");
    // ... or removes the local checkpoint: the external copy still finds the cut.
    std::fs::remove_file(&checkpoints).unwrap();
    assert_eq!(verify(&dir, Some(b"s3cret")).unwrap().records, 4);
    let (code, out) = cli(&[
        "audit",
        "verify",
        d,
        "--key-file",
        k,
        "--checkpoints",
        external.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("2 records missing"), "{out}");

    // The whole last day deleted.
    rewrite(&file, &good);
    std::fs::write(&checkpoints, &saved).unwrap();
    std::fs::remove_file(&file).unwrap();
    let e = verify(&dir, Some(b"s3cret")).unwrap_err();
    assert_eq!(e.kind, Tamper::Truncated, "{e}");
    assert!(
        e.detail.contains("the file is gone") && e.file == file,
        "{e}"
    );

    // Restored: it verifies against both.
    rewrite(&file, &good);
    let (code, out) = cli(&[
        "audit",
        "verify",
        d,
        "--key-file",
        k,
        "--checkpoints",
        external.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("none missing against 1 checkpoints"), "{out}");
}

/// `audit cat` prints the records, and first a notice that reading them should itself be
/// audited.
#[test]
fn audit_cat_prints_the_records_with_a_notice() {
    let dir = tempdir("audit-cat");
    write_log(&dir, 4, None);
    let out = Command::new(env!("CARGO_BIN_EXE_authwatch"))
        .args(["audit", "cat", dir.to_str().unwrap(), "--class", "security"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.lines()
            .all(|l| l.contains("\"event.name\":\"auth.login.failure\"")),
        "{text}"
    );
    let notice = String::from_utf8_lossy(&out.stderr);
    assert!(
        notice.contains("should itself be audited") && notice.contains("auditd"),
        "{notice}"
    );
}

/// Encrypted at rest to an age recipient: the service writes records it cannot read back;
/// the chain verifies without the identity; with it the records verify and read; another
/// identity reads nothing.
#[test]
fn an_encrypted_log_verifies_without_the_identity_and_reads_with_it() {
    use age::secrecy::ExposeSecret as _;
    let dir = tempdir("audit-encrypted");
    let id = age::x25519::Identity::generate();
    let keys = tempdir("audit-identity");
    let idfile = keys.join("key.txt");
    std::fs::write(
        &idfile,
        format!(
            "# created for the test\n{}\n",
            id.to_string().expose_secret()
        ),
    )
    .unwrap();
    let other = keys.join("other.txt");
    std::fs::write(
        &other,
        format!(
            "{}\n",
            age::x25519::Identity::generate()
                .to_string()
                .expose_secret()
        ),
    )
    .unwrap();
    let watch = AuthWatch::builder()
        .otlp(false)
        .audit_requests(false)
        .audit_file(
            FileSettings::new(&dir)
                .flush(AuditFlush::EachRecord)
                .encrypt_to([id.to_public().to_string()]),
        )
        .build()
        .unwrap();
    let a = watch.audit_logger();
    for i in 0..5 {
        a.log_login_failure(
            &format!("alice-{i}@example.com"),
            None,
            None,
            "Invalid credentials",
        );
    }
    a.sync();
    let file = only_file(&dir, "security");
    let raw = std::fs::read_to_string(&file).unwrap();
    assert!(
        !raw.contains("alice") && !raw.contains("Invalid credentials"),
        "{raw}"
    );
    assert_eq!(raw.lines().count(), 5);
    let d = dir.to_str().unwrap();
    // Without the identity: the chain (and the checkpoint) hold.
    let (code, out) = cli(&["audit", "verify", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("5 records in 1 files verify"), "{out}");
    // With it: every record opens.
    let (code, out) = cli(&["audit", "verify", d, "--identity", idfile.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("5 encrypted records read"), "{out}");
    let cat = Command::new(env!("CARGO_BIN_EXE_authwatch"))
        .args(["audit", "cat", d, "--identity", idfile.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&cat.stdout);
    assert!(cat.status.success());
    assert_eq!(text.matches("Invalid credentials").count(), 5, "{text}");
    assert!(
        text.contains("\"event.name\":\"auth.login.failure\""),
        "{text}"
    );
    // Another identity reads nothing, and says so.
    let (code, out) = cli(&["audit", "verify", d, "--identity", other.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("WrongKey") && out.contains("cannot decrypt"),
        "{out}"
    );
    let cat = Command::new(env!("CARGO_BIN_EXE_authwatch"))
        .args(["audit", "cat", d])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&cat.stdout).contains("Invalid credentials"));
    assert!(String::from_utf8_lossy(&cat.stderr).contains("5 records are encrypted"));
    // An edited ciphertext breaks the chain, identity or not.
    let mut m = lines(&file);
    let i = m[2].find("\"age\":\"").unwrap() + 10;
    let c = if &m[2][i..=i] == "A" { "B" } else { "A" };
    m[2].replace_range(i..=i, c);
    rewrite(&file, &m);
    assert_eq!(verify(&dir, None).unwrap_err().kind, Tamper::Edited);
}

#[test]
fn a_keyed_chain_needs_its_key() {
    let dir = tempdir("audit-keyed");
    let file = write_log(&dir, 3, Some("s3cret"));
    let keyfile = tempdir("audit-keyfile").join("key");
    // As `echo s3cret > key` writes it: the newline is not part of the key.
    std::fs::write(&keyfile, "s3cret\n").unwrap();
    let (f, k) = (file.to_str().unwrap(), keyfile.to_str().unwrap());
    assert_eq!(verify(&file, Some(b"s3cret")).unwrap().records, 3);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(
        verify_bytes(&file, &bytes, Some(b"s3cret"))
            .unwrap()
            .records,
        3
    );
    assert_eq!(
        verify_bytes(&file, &bytes, Some(b"guess"))
            .unwrap_err()
            .kind,
        Tamper::WrongKey
    );
    assert_eq!(cli(&["audit", "verify", f, "--key-file", k]).0, 0);
    assert_eq!(verify(&file, None).unwrap_err().kind, Tamper::WrongKey);
    assert_eq!(
        verify(&file, Some(b"guess")).unwrap_err().kind,
        Tamper::WrongKey
    );
    // The user ids in it are keyed too, with a key of their own (never a chain hash).
    assert!(lines(&file)[0].contains("\"user.id\":\"hmac-sha256:"));
    // A forger without the key rewrites the file as an unkeyed chain: refused when checked
    // with the key.
    let unkeyed = write_log(&tempdir("audit-unkeyed"), 3, None);
    std::fs::copy(&unkeyed, &file).unwrap();
    let e = verify(&file, Some(b"s3cret")).unwrap_err();
    assert_eq!((e.line, e.kind), (1, Tamper::WrongKey));
    let (code, out) = cli(&["audit", "verify", f, "--key-file", k]);
    assert_eq!(code, 1, "{out}");
    // Unreadable paths and empty folders are usage errors, not tampering.
    assert_eq!(cli(&["audit", "verify", "/nonexistent/audit"]).0, 2);
    assert_eq!(
        cli(&["audit", "verify", tempdir("audit-empty").to_str().unwrap()]).0,
        2
    );
}

#[test]
fn files_past_their_retention_are_pruned() {
    let dir = tempdir("audit-prune");
    let day = |d: i64| {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs((20_000 + d) as u64 * 86_400);
        humantime::format_rfc3339_seconds(t).to_string()[..10].to_owned()
    };
    // Files as the writer names them, 10, 100 and 400 days before "now".
    for (class, age) in [
        ("authentication", 10),
        ("authentication", 100),
        ("security", 100),
        ("security", 400),
    ] {
        std::fs::write(dir.join(format!("{class}-{}.jsonl", day(-age))), "").unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not ours").unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 3600);
    let watch = AuthWatch::builder()
        .otlp(false)
        .audit_file(FileSettings::new(&dir).clock(move || now))
        .build()
        .unwrap();
    watch.audit_logger().sync();
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            format!("authentication-{}.jsonl", day(-10)),
            "notes.txt".to_owned(),
            format!("security-{}.jsonl", day(-100)),
        ]
    );
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let watch = AuthWatch::builder()
        .otlp(false)
        .audit_queue(1)
        .build()
        .unwrap();
    let a = watch.audit_logger();
    let start = std::time::Instant::now();
    for i in 0..10_000 {
        a.log_login_success(&format!("u-{i}"), None, None);
    }
    let took = start.elapsed();
    a.sync();
    assert!(a.dropped() > 0, "a queue of 1 must overflow");
    assert!(took < Duration::from_secs(5));
    let text = watch.metrics_text().unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("auth_audit_dropped_count_total"))
        .unwrap();
    assert!(!line.ends_with(" 0"), "{line}");
}

/// The child side of the crash test: writes records until killed, printing how many it has
/// synced (flushed to the file). The crash test runs its own test binary again, with
/// `AUTHWATCH_CRASH_DIR` set, and this is what that run does.
fn crash_child(dir: &str) -> ! {
    let watch = AuthWatch::builder()
        .otlp(false)
        .audit_requests(false)
        .audit_file(FileSettings::new(dir).flush(AuditFlush::Batched {
            max_records: 50,
            max_delay: Duration::from_millis(20),
        }))
        .build()
        .unwrap();
    let a = watch.audit_logger();
    for i in 0u64.. {
        a.log_login_failure(
            &format!("u-{i}"),
            None,
            Some("crash-test"),
            "Invalid credentials",
        );
        if i % 100 == 99 {
            a.sync();
            println!("synced {}", i + 1);
        }
    }
    unreachable!("the parent kills this process")
}

#[test]
fn a_writer_killed_mid_write_leaves_a_verifiable_prefix() {
    use std::io::{BufRead, BufReader};
    if let Ok(dir) = std::env::var("AUTHWATCH_CRASH_DIR") {
        crash_child(&dir);
    }
    let dir = tempdir("audit-crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_writer_killed_mid_write_leaves_a_verifiable_prefix",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("AUTHWATCH_CRASH_DIR", &dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut synced = 0u64;
    for line in out.lines().map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("synced ") {
            synced = n.parse().unwrap();
            if synced >= 2_000 {
                break;
            }
        }
    }
    // SIGKILL: no destructor, no flush.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(synced >= 2_000);
    let report = verify(&dir, None).unwrap();
    assert!(
        report.records as u64 >= synced,
        "{} records verify, {synced} were synced",
        report.records
    );
    // The next writer carries on the same chain.
    let watch = AuthWatch::builder()
        .otlp(false)
        .audit_requests(false)
        .audit_file(FileSettings::new(&dir))
        .build()
        .unwrap();
    watch.audit_logger().log_logout("u-1", None, None);
    watch
        .audit_logger()
        .log_login_failure("u-1", None, None, "after the crash");
    watch.audit_logger().sync();
    let after = verify(&dir, None).unwrap();
    assert!(after.torn.is_empty());
    assert_eq!(after.records, report.records + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_queries_are_metrics_and_slow_ones_are_audited() {
    let _ = events();
    let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    let watch = AuthWatch::builder()
        .otlp(false)
        // Far from both the fast query and the slow one, so a loaded machine cannot flip them.
        .slow_query_threshold(Duration::from_millis(300))
        .build()
        .unwrap();
    for _ in 0..3 {
        let row: (i64,) = watch
            .time_query("find_user", sqlx::query_as("SELECT 1").fetch_one(&pool))
            .await
            .unwrap();
        assert_eq!(row.0, 1);
    }
    watch
        .time_query(
            "load_sessions_slowly",
            tokio::time::sleep(Duration::from_millis(400)),
        )
        .await;
    watch.audit_logger().sync();
    let text = watch.metrics_text().unwrap();
    let count = |name: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("auth_db_query_time_ms_count{")
                    && l.contains(&format!("db_query_name=\"{name}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    assert_eq!(count("find_user").as_deref(), Some("3"), "{text}");
    assert_eq!(count("load_sessions_slowly").as_deref(), Some("1"));
    let slow = find(|f| {
        f.get("event.name").map(String::as_str) == Some("auth.db.slow_query")
            && f.get("db.query.name").map(String::as_str) == Some("load_sessions_slowly")
    });
    assert_eq!(slow.len(), 1, "{slow:?}");
    let (level, f) = &slow[0];
    assert_eq!(*level, tracing::Level::WARN);
    assert_eq!(f["audit.class"], "security");
    assert!(f["auth.duration_ms"].parse::<f64>().unwrap() >= 400.0);
    assert!(find(|f| f.get("db.query.name").map(String::as_str) == Some("find_user")).is_empty());
}
