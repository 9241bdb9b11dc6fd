//! Real components for the end-to-end tests: the rotel OTLP collector, Prometheus, and the
//! example binaries, each started as its own process on loopback ports and stopped on drop.
//!
//! The components are installed by `scripts/test-deps.sh` into `.test-deps/bin`; a missing one
//! fails the test with a message naming the script (never a silent skip).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A component installed by `scripts/test-deps.sh`.
pub fn dep(name: &str) -> PathBuf {
    let p = repo().join(".test-deps/bin").join(name);
    assert!(
        p.exists(),
        "{name} is not installed: run scripts/test-deps.sh (it installs rotel and Prometheus \
         into .test-deps/bin)"
    );
    p
}

/// An example binary, built by `cargo test` next to the test binaries.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test> -> target/debug/examples/<name>
    let p = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        p.exists(),
        "{} not built (cargo test builds the examples)",
        p.display()
    );
    p
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` and the last state after `secs`.
/// The value of the first line of a Prometheus text page that starts with `name` (a metric
/// name, or a name with the start of its labels).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A child process killed (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// SIGTERM and wait (up to 10 s) for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The rotel collector with its debug log of metrics and logs going to a file.
pub struct Rotel {
    pub proc: Proc,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
    /// What it prints (`metrics`, `logs`, `traces`).
    debug: &'static [&'static str],
    _dir: tempdir::Dir,
}

pub mod tempdir {
    use std::path::{Path, PathBuf};
    /// A temporary directory removed on drop.
    pub struct Dir(PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "authwatch-{tag}-{}-{:x}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Rotel {
    pub fn start() -> Self {
        Self::start_printing(&["metrics", "logs", "traces"])
    }

    /// A collector that prints only `debug` (a long run's log records would fill the disk).
    pub fn start_printing(debug: &'static [&'static str]) -> Self {
        let dir = tempdir::Dir::new("rotel");
        let log = dir.path().join("rotel.log");
        let (grpc, http) = (
            SocketAddr::from(([127, 0, 0, 1], free_port())),
            SocketAddr::from(([127, 0, 0, 1], free_port())),
        );
        let proc = Self::spawn(grpc, http, &log, debug);
        Self {
            proc,
            grpc,
            http,
            log,
            debug,
            _dir: dir,
        }
    }

    fn spawn(grpc: SocketAddr, http: SocketAddr, log: &Path, debug: &[&str]) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(dep("rotel-agent"))
            .args(["start", "--otlp-grpc-endpoint", &grpc.to_string()])
            .args(["--otlp-http-endpoint", &http.to_string()])
            .args(["--exporter", "blackhole"])
            .args(debug.iter().flat_map(|d| ["--debug-log", d]))
            .args(["--debug-log-verbosity", "detailed", "--log-format", "json"])
            .args(["--batch-timeout", "50ms"])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start rotel-agent");
        let p = Proc {
            child,
            name: "rotel".into(),
        };
        wait_listening(grpc, "rotel (gRPC)");
        wait_listening(http, "rotel (HTTP)");
        p
    }

    /// Stops the collector (the outage).
    pub fn stop(&mut self) {
        self.proc.terminate();
    }

    /// Starts it again on the same ports, appending to the same log.
    pub fn restart(&mut self) {
        self.proc = Self::spawn(self.grpc, self.http, &self.log, self.debug);
    }

    pub fn text(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        strip_ansi(&raw)
    }

    pub fn parse(&self) -> Dump {
        Dump::parse(&self.text())
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One data point of rotel's debug dump.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    pub service: String,
    pub metric: String,
    pub data_type: String,
    pub temporality: String,
    pub unit: String,
    pub attrs: BTreeMap<String, String>,
    pub value: Option<f64>,
    pub count: Option<u64>,
    pub sum: Option<f64>,
}

/// One log record of rotel's debug dump.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRecord {
    pub service: String,
    pub severity: String,
    pub body: String,
    pub trace_id: String,
    pub attrs: BTreeMap<String, String>,
}

/// One span of rotel's debug dump.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanRec {
    pub trace_id: String,
    pub parent_id: String,
    pub id: String,
    pub name: String,
    pub kind: String,
    pub attrs: BTreeMap<String, String>,
}

/// The signal whose block a line of rotel's debug output starts (`ResourceMetrics #0`,
/// `ResourceLog #0`, `ResourceSpans #0`; see shared/RECIPES.md), if it starts one.
pub fn resource_block(line: &str) -> Option<Signal> {
    let t = line.trim_start();
    [
        ("ResourceMetrics #", Signal::Metrics),
        ("ResourceLog #", Signal::Logs),
        ("ResourceSpans #", Signal::Traces),
    ]
    .into_iter()
    .find_map(|(start, signal)| t.starts_with(start).then_some(signal))
}

/// The three kinds of block rotel prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Metrics,
    Logs,
    Traces,
}

/// Every span rotel printed (`--debug-log traces`), in order.
pub fn spans(text: &str) -> Vec<SpanRec> {
    let mut out: Vec<SpanRec> = Vec::new();
    let mut in_span = false;
    for line in text.lines() {
        let t = line.trim_end();
        if t.starts_with("Span #") {
            out.push(SpanRec::default());
            in_span = true;
            continue;
        }
        if resource_block(t).is_some() {
            in_span = false;
            continue;
        }
        let Some(s) = out.last_mut().filter(|_| in_span) else {
            continue;
        };
        let field = |name: &str| {
            t.trim_start()
                .strip_prefix(name)
                .and_then(|r| r.trim_start().strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        };
        if let Some(v) = field("Trace ID") {
            s.trace_id = v;
        } else if let Some(v) = field("Parent ID") {
            s.parent_id = v;
        } else if let Some(v) = field("ID") {
            s.id = v;
        } else if let Some(v) = field("Name") {
            s.name = v;
        } else if let Some(v) = field("Kind") {
            s.kind = v;
        } else if let Some((k, v)) = kv(t) {
            s.attrs.insert(k, v);
        }
    }
    out
}

/// Everything rotel printed, in order.
#[derive(Debug, Default)]
pub struct Dump {
    pub points: Vec<Point>,
    pub logs: Vec<LogRecord>,
}

fn kv(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix("-> ")?;
    let (k, v) = rest.split_once(": ")?;
    // Str(x), Int(3), Double(1.5), Bool(true)
    let v = v
        .split_once('(')
        .and_then(|(_, x)| x.strip_suffix(')'))
        .unwrap_or(v);
    Some((k.to_owned(), v.to_owned()))
}

impl Dump {
    pub fn parse(text: &str) -> Self {
        #[derive(PartialEq)]
        enum Mode {
            None,
            Resource,
            Descriptor,
            PointAttrs,
            LogAttrs,
        }
        let mut d = Self::default();
        let (mut service, mut metric, mut dtype, mut temp, mut unit) = (
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        );
        let mut mode = Mode::None;
        let mut in_log = false;
        for line in text.lines() {
            let t = line.trim_end();
            if resource_block(t).is_some() {
                service.clear();
                in_log = false;
                mode = Mode::None;
                continue;
            }
            if t.starts_with("Resource attributes:") {
                mode = Mode::Resource;
                continue;
            }
            if t.starts_with("Descriptor:") {
                mode = Mode::Descriptor;
                continue;
            }
            if t.starts_with("Metric #") {
                metric.clear();
                in_log = false;
                continue;
            }
            if t.contains("DataPoints #") {
                d.points.push(Point {
                    service: service.clone(),
                    metric: metric.clone(),
                    data_type: dtype.clone(),
                    temporality: temp.clone(),
                    unit: unit.clone(),
                    ..Point::default()
                });
                mode = Mode::None;
                continue;
            }
            if t.starts_with("Data point attributes:") {
                mode = Mode::PointAttrs;
                continue;
            }
            if t.starts_with("LogRecord #") {
                d.logs.push(LogRecord {
                    service: service.clone(),
                    ..LogRecord::default()
                });
                in_log = true;
                mode = Mode::None;
                continue;
            }
            if t.starts_with("Attributes:") && in_log {
                mode = Mode::LogAttrs;
                continue;
            }
            if let Some((k, v)) = kv(t) {
                match mode {
                    Mode::Resource if k == "service.name" => service = v,
                    Mode::Descriptor => match k.as_str() {
                        "Name" => metric = v,
                        "DataType" => dtype = v,
                        "AggregationTemporality" => temp = v,
                        "Unit" => unit = v,
                        _ => {}
                    },
                    Mode::PointAttrs => {
                        if let Some(p) = d.points.last_mut() {
                            p.attrs.insert(k, v);
                        }
                    }
                    Mode::LogAttrs => {
                        if let Some(l) = d.logs.last_mut() {
                            l.attrs.insert(k, v);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            if t.trim_start().starts_with("-> Unit:") && mode == Mode::Descriptor {
                unit.clear();
                continue;
            }
            mode = match mode {
                Mode::Resource | Mode::Descriptor => Mode::None,
                m => {
                    if !t.starts_with("     ->") {
                        Mode::None
                    } else {
                        m
                    }
                }
            };
            if in_log {
                if let Some(l) = d.logs.last_mut() {
                    if let Some(v) = t.strip_prefix("SeverityText: ") {
                        l.severity = v.to_owned();
                    } else if let Some(v) = t
                        .trim_start()
                        .strip_prefix("Trace ID")
                        .and_then(|r| r.trim_start().strip_prefix(':'))
                    {
                        l.trace_id = v.trim().to_owned();
                    } else if let Some(v) = t.strip_prefix("Body: ") {
                        l.body = v
                            .strip_prefix("Str(")
                            .and_then(|x| x.strip_suffix(')'))
                            .unwrap_or(v)
                            .to_owned();
                    }
                }
                continue;
            }
            if let Some(p) = d.points.last_mut() {
                if let Some(v) = t.strip_prefix("Value: ") {
                    p.value = v.trim().parse().ok();
                } else if let Some(v) = t.strip_prefix("Count: ") {
                    p.count = v.trim().parse().ok();
                } else if let Some(v) = t.strip_prefix("Sum: ") {
                    p.sum = v.trim().parse().ok();
                }
            }
        }
        d
    }

    /// The last point (cumulative metrics repeat on every export) of `metric` whose attributes
    /// include all of `attrs`, per distinct attribute set; summed over those sets.
    pub fn last_total(&self, metric: &str, attrs: &[(&str, &str)]) -> f64 {
        let mut last: BTreeMap<BTreeMap<String, String>, f64> = BTreeMap::new();
        for p in self.points.iter().filter(|p| {
            p.metric == metric
                && attrs
                    .iter()
                    .all(|(k, v)| p.attrs.get(*k).map(String::as_str) == Some(*v))
        }) {
            let v = p.value.or(p.count.map(|c| c as f64)).unwrap_or(0.0);
            last.insert(p.attrs.clone(), v);
        }
        last.values().sum()
    }

    pub fn metric_names(&self) -> std::collections::BTreeSet<String> {
        self.points.iter().map(|p| p.metric.clone()).collect()
    }
}

/// An example binary running with `--port 0`; `addr` is what it printed.
pub struct Example {
    pub proc: Proc,
    pub addr: SocketAddr,
    /// The lines it printed before its address.
    pub seen: Vec<String>,
    pub lines: mpsc::Receiver<String>,
    pub stderr: PathBuf,
    _dir: tempdir::Dir,
}

impl Example {
    pub fn start(name: &str, args: &[&str], env: &[(&str, String)]) -> Self {
        let dir = tempdir::Dir::new("example");
        let stderr = dir.path().join("stderr.log");
        let mut cmd = Command::new(example(name));
        if name == "axum" {
            // Every catalog metric, geography included: loopback clients are country "XL".
            let db = dir.path().join("test-country.mmdb");
            std::fs::write(
                &db,
                mmdb(&[("127.0.0.0/8", "XL"), ("203.0.113.0/24", "AU")]),
            )
            .unwrap();
            cmd.env("GEOIP_DB", &db);
        }
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start example");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let proc = Proc {
            child,
            name: name.into(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("example {name} never printed its address"));
            if let Some(a) = line.strip_prefix("listening on http://") {
                break a.parse().unwrap();
            }
            seen.push(line);
        };
        Self {
            proc,
            addr,
            seen,
            lines: rx,
            stderr,
            _dir: dir,
        }
    }

    /// What it logged so far (ANSI colours removed).
    /// Waits (at most `secs` from now) for the example to exit, asserts it exited 0, and
    /// returns every line it printed to stdout since its address.
    pub fn wait_exit(&mut self, secs: u64) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(Some(status)) = self.proc.child.try_wait() {
                assert!(status.success(), "{}", self.stderr_text());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not finish",
                self.proc.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.lines.try_iter().collect()
    }

    pub fn stderr_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.stderr).unwrap_or_default())
    }

    /// Stops it with SIGTERM (it flushes its exporters) and returns what it printed after.
    pub fn stop(mut self) -> String {
        assert!(
            self.proc.terminate(),
            "example did not exit cleanly:\n{}",
            self.stderr_text()
        );
        self.lines.try_iter().collect::<Vec<_>>().join("\n")
    }
}

/// A real Alertmanager on loopback, with its own directory.
pub struct Alertmanager {
    _proc: Proc,
    pub url: String,
    _dir: tempdir::Dir,
}

impl Alertmanager {
    /// On `port`, notifying nobody.
    pub fn start(port: u16) -> Self {
        Self::start_with(
            port,
            "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n",
        )
    }

    /// On `port`, with `config` (its YAML).
    pub fn start_with(port: u16, config: &str) -> Self {
        let dir = tempdir::Dir::new("alertmanager");
        let cfg = dir.path().join("am.yml");
        std::fs::write(&cfg, config).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(dir.path().join("am.log")).unwrap();
        let child = Command::new(dep("alertmanager"))
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start alertmanager");
        wait_listening(addr, "alertmanager");
        Self {
            _proc: Proc {
                child,
                name: "alertmanager".into(),
            },
            url: format!("http://{addr}"),
            _dir: dir,
        }
    }

    /// The alerts Alertmanager lists (active ones; resolved alerts drop out of the list).
    pub fn alerts(&self, http: &Http) -> Vec<serde_json::Value> {
        let (status, body) = http.get(&format!("{}/api/v2/alerts", self.url));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap()
    }
}

/// An auth app on its own runtime, with the alerts configured by `alerts`.
/// A real Prometheus scraping `targets` every second.
pub struct Prometheus {
    pub proc: Proc,
    pub addr: SocketAddr,
    _dir: tempdir::Dir,
}

impl Prometheus {
    pub fn start(job: &str, targets: &[SocketAddr], extra_scrape: &str) -> Self {
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: {job}\n{extra_scrape}    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        Self::run("prometheus", &config, None, &[])
    }

    /// One that scrapes nothing and serves the TSDB in `data` (blocks backfilled with
    /// `promtool tsdb create-blocks-from`), kept for 30 days.
    pub fn start_on_data(data: &Path) -> Self {
        Self::run(
            "prometheus-data",
            "global:\n  evaluation_interval: 1m\n",
            Some(data),
            &["--storage.tsdb.retention.time=30d"],
        )
    }

    /// Prometheus with `config`, its TSDB in `data` (or a folder of its own), and `args`.
    fn run(tag: &str, config: &str, data: Option<&Path>, args: &[&str]) -> Self {
        let dir = tempdir::Dir::new(tag);
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let tsdb = data.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        let child = Command::new(dep("prometheus"))
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address={addr}"))
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let proc = Proc {
            child,
            name: "prometheus".into(),
        };
        wait_listening(addr, "prometheus");
        Self {
            proc,
            addr,
            _dir: dir,
        }
    }
}

/// A blocking HTTP client (a Tokio runtime and hyper-util's client inside).
pub struct Http {
    pub rt: tokio::runtime::Runtime,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = {
            let _g = rt.enter();
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http()
        };
        Self { rt, client }
    }

    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        use http_body_util::BodyExt;
        let mut req = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .unwrap();
        self.rt.block_on(async {
            let res = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
                .await
                .unwrap_or_else(|_| panic!("{method} {url} timed out"))
                .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let status = res.status().as_u16();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        })
    }

    pub fn get(&self, url: &str) -> (u16, String) {
        self.send("GET", url, &[], "")
    }

    pub fn post_json(&self, url: &str, json: &str, headers: &[(&str, &str)]) -> u16 {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        self.send("POST", url, &h, json).0
    }

    /// Sends a request and gives up after `after`: the server sees the connection close while
    /// the handler runs (a cancelled request).
    pub fn give_up(&self, addr: SocketAddr, raw_request: &str, after: Duration) {
        use std::io::Write;
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(raw_request.as_bytes()).unwrap();
        std::thread::sleep(after);
        drop(s);
    }

    /// A Prometheus instant query; the `data.result` array.
    pub fn prom_query(&self, prom: SocketAddr, q: &str) -> serde_json::Value {
        let url = format!(
            "http://{prom}/api/v1/query?query={}",
            q.bytes()
                .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                })
                .collect::<String>()
        );
        let (status, body) = self.get(&url);
        assert_eq!(status, 200, "{q}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].clone()
    }
}

/// What `drive_axum` sent, as the metric values it must produce: (instrument, attributes that
/// pick the series) → total.
pub type Expected = Vec<(&'static str, Vec<(&'static str, &'static str)>, f64)>;

/// Sends the axum example a fixed mix that touches every counter and histogram of the catalog,
/// and returns the values each must reach.
pub fn drive_axum(http: &Http, addr: SocketAddr) -> Expected {
    let u = |p: &str| format!("http://{addr}{p}");
    let sign_in = |email: &str, pw: &str| {
        http.post_json(
            &u("/api/auth/sign-in/email"),
            &format!(r#"{{"email":"{email}","password":"{pw}"}}"#),
            &[("x-forwarded-for", "203.0.113.50")],
        )
    };
    for _ in 0..3 {
        assert_eq!(sign_in("ada@example.com", "wrong"), 401);
    }
    let token = |http: &Http| {
        let (s, b) = http.send(
            "POST",
            &u("/api/auth/sign-in/email"),
            &[("content-type", "application/json")],
            r#"{"email":"ada@example.com","password":"correct horse"}"#,
        );
        assert_eq!(s, 200, "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        v["token"].as_str().unwrap().to_owned()
    };
    let t1 = token(http);
    let t2 = token(http);
    for i in 0..6 {
        let want = if i < 5 { 401 } else { 429 };
        assert_eq!(sign_in("eve@example.com", "guess"), want);
    }
    assert_eq!(sign_in("mallory@example.com", "anything"), 423);
    let reg = |body: &str| http.post_json(&u("/api/auth/sign-up/email"), body, &[]);
    assert_eq!(
        reg(r#"{"email":"bob@example.com","password":"long enough"}"#),
        200
    );
    assert_eq!(
        reg(r#"{"email":"bob@example.com","password":"long enough"}"#),
        409
    );
    assert_eq!(
        reg(r#"{"email":"carl@example.com","password":"short"}"#),
        400
    );
    let bearer1 = format!("Bearer {t1}");
    let bearer2 = format!("Bearer {t2}");
    for _ in 0..2 {
        let (s, _) = http.send(
            "GET",
            &u("/api/auth/get-session"),
            &[("authorization", &bearer1)],
            "",
        );
        assert_eq!(s, 200);
        let (s, _) = http.send("GET", &u("/api/me"), &[("authorization", &bearer1)], "");
        assert_eq!(s, 200);
    }
    let (s, _) = http.send(
        "GET",
        &u("/api/auth/get-session"),
        &[("authorization", "Bearer tok-bogus")],
        "",
    );
    assert_eq!(s, 401);
    let (s, _) = http.send("GET", &u("/api/me"), &[], "");
    assert_eq!(s, 401);
    let (s, _) = http.send(
        "POST",
        &u("/api/auth/get-access-token"),
        &[("authorization", &bearer1)],
        "",
    );
    assert_eq!(s, 200);
    let (s, _) = http.send(
        "POST",
        &u("/api/auth/get-access-token"),
        &[("authorization", "Bearer tok-bogus")],
        "",
    );
    assert_eq!(s, 401);
    let (s, _) = http.send(
        "POST",
        &u("/api/auth/sign-out"),
        &[("authorization", &bearer2)],
        "",
    );
    assert_eq!(s, 200);
    let (s, _) = http.send(
        "POST",
        &u("/api/auth/sign-out"),
        &[("authorization", &bearer2)],
        "",
    );
    assert_eq!(s, 401);
    assert_eq!(
        http.post_json(
            &u("/api/auth/request-password-reset"),
            r#"{"email":"ada@example.com"}"#,
            &[]
        ),
        200
    );
    assert_eq!(
        http.post_json(&u("/api/auth/request-password-reset"), "{}", &[]),
        400
    );
    // A client that gives up while the reset e-mail is being "sent".
    let body = r#"{"email":"ada@example.com"}"#;
    http.give_up(
        addr,
        &format!(
            "POST /api/auth/request-password-reset HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
        Duration::from_millis(50),
    );
    let login = ("auth.operation", "login");
    vec![
        ("auth.login.success.count", vec![login], 2.0),
        (
            "auth.login.failure.count",
            vec![login, ("auth.failure.reason", "invalid_credentials")],
            8.0,
        ),
        ("auth.rate.limit.exceeded.count", vec![login], 1.0),
        (
            "auth.login.failure.count",
            vec![login, ("auth.failure.reason", "locked_out")],
            1.0,
        ),
        // The 423 (layer) and the handler's log_lockout (no route).
        ("auth.lockout.count", vec![login], 2.0),
        (
            "auth.lockout.count",
            vec![("http.route", "/api/auth/sign-in/email")],
            1.0,
        ),
        ("auth.registration.success.count", vec![], 1.0),
        (
            "auth.registration.failure.count",
            vec![("auth.failure.reason", "conflict")],
            1.0,
        ),
        (
            "auth.registration.failure.count",
            vec![("auth.failure.reason", "bad_request")],
            1.0,
        ),
        (
            "auth.token.validation.success.count",
            vec![("http.route", "/api/auth/get-session")],
            2.0,
        ),
        (
            "auth.token.validation.success.count",
            vec![("http.route", "/api/me")],
            2.0,
        ),
        (
            "auth.token.validation.failure.count",
            vec![("auth.failure.reason", "invalid_token")],
            2.0,
        ),
        ("auth.invalid.token.attempts.count", vec![], 2.0),
        ("auth.token.refresh.success.count", vec![], 1.0),
        ("auth.token.refresh.failure.count", vec![], 1.0),
        ("auth.logout.success.count", vec![], 1.0),
        ("auth.logout.failure.count", vec![], 1.0),
        ("auth.password.reset.success.count", vec![], 1.0),
        (
            "auth.password.reset.failure.count",
            vec![("auth.failure.reason", "bad_request")],
            1.0,
        ),
        (
            "auth.request.cancelled.count",
            vec![("auth.operation", "password_reset")],
            1.0,
        ),
        // Histograms: the count of requests.
        ("auth.response.time.ms", vec![], 25.0),
        ("auth.response.time.ms", vec![login], 12.0),
        ("auth.token.validation.time.ms", vec![], 6.0),
    ]
}

/// Things that must never appear in any exported attribute.
pub const SECRETS: &[&str] = &[
    "203.0.113.50",
    "127.0.0.1",
    "ada@example.com",
    "eve@example.com",
    "tok-",
    "correct horse",
];

/// A minimal OTLP/gRPC metrics receiver on the official `opentelemetry-proto` types: it keeps
/// every export request.
#[derive(Clone, Default)]
pub struct Receiver(
    pub  std::sync::Arc<
        std::sync::Mutex<
            Vec<opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest>,
        >,
    >,
);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService
    for Receiver
{
    async fn export(
        &self,
        req: tonic::Request<
            opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse,
        >,
        tonic::Status,
    > {
        self.0.lock().unwrap().push(req.into_inner());
        Ok(tonic::Response::new(Default::default()))
    }
}

/// A minimal OTLP/gRPC logs receiver on the official `opentelemetry-proto` types: it keeps
/// every export request and reports `reject` records of each as rejected (partial success).
#[derive(Clone, Default)]
pub struct LogReceiver {
    pub requests: std::sync::Arc<
        std::sync::Mutex<
            Vec<opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest>,
        >,
    >,
    pub reject: i64,
}

impl LogReceiver {
    /// Every log record received, with its scope name.
    pub fn records(&self) -> Vec<(String, opentelemetry_proto::tonic::logs::v1::LogRecord)> {
        let reqs = self.requests.lock().unwrap();
        reqs.iter()
            .flat_map(|r| &r.resource_logs)
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| {
                let scope = sl
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                sl.log_records
                    .iter()
                    .map(move |l| (scope.clone(), l.clone()))
            })
            .collect()
    }
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsService
    for LogReceiver
{
    async fn export(
        &self,
        req: tonic::Request<
            opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest,
        >,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse>,
        tonic::Status,
    > {
        use opentelemetry_proto::tonic::collector::logs::v1::{
            ExportLogsPartialSuccess, ExportLogsServiceResponse,
        };
        self.requests.lock().unwrap().push(req.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: (self.reject > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: self.reject,
                error_message: "rejected by the test".into(),
            }),
        }))
    }
}

pub type Attrs = BTreeMap<String, String>;

/// OTLP attributes as strings.
pub fn attrs(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Attrs {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A small MaxMind DB writer, for GeoIP tests.

fn ctrl(kind: u8, size: usize, out: &mut Vec<u8>) {
    assert!(size < 29);
    if kind <= 7 {
        out.push((kind << 5) | size as u8);
    } else {
        out.push(size as u8);
        out.push(kind - 7);
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    ctrl(2, s.len(), out);
    out.extend_from_slice(s.as_bytes());
}

fn uint(kind: u8, v: u64, out: &mut Vec<u8>) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    ctrl(kind, 8 - skip, out);
    out.extend_from_slice(&bytes[skip..]);
}

/// A MaxMind DB (format 2.0: an IPv4 search tree with 24-bit records, a data section of
/// `{country: {iso_code}}` maps, the metadata map) with `networks` (CIDR, country code).
pub fn mmdb(networks: &[(&str, &str)]) -> Vec<u8> {
    // The data section: one record per country.
    let mut data = Vec::new();
    let mut offsets = BTreeMap::new();
    for (_, iso) in networks {
        offsets.entry(*iso).or_insert_with(|| {
            let at = data.len();
            ctrl(7, 1, &mut data);
            string("country", &mut data);
            ctrl(7, 1, &mut data);
            string("iso_code", &mut data);
            string(iso, &mut data);
            at
        });
    }
    // The search tree: a binary trie over the address bits.
    #[derive(Clone, Copy)]
    enum Rec {
        Empty,
        Node(usize),
        Data(usize),
    }
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty; 2]];
    for (cidr, iso) in networks {
        let (addr, len) = cidr.split_once('/').unwrap();
        let addr = u32::from(addr.parse::<Ipv4Addr>().unwrap());
        let len: u32 = len.parse().unwrap();
        let mut node = 0;
        for depth in 0..len {
            let bit = ((addr >> (31 - depth)) & 1) as usize;
            if depth + 1 == len {
                nodes[node][bit] = Rec::Data(offsets[iso]);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty; 2]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for n in &nodes {
        for r in n {
            let v = match *r {
                Rec::Empty => count,
                Rec::Node(i) => i,
                Rec::Data(off) => count + 16 + off,
            };
            out.extend_from_slice(&(v as u32).to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let mut meta = Vec::new();
    ctrl(7, 9, &mut meta);
    string("binary_format_major_version", &mut meta);
    uint(5, 2, &mut meta);
    string("binary_format_minor_version", &mut meta);
    uint(5, 0, &mut meta);
    string("build_epoch", &mut meta);
    uint(9, 1_764_000_000, &mut meta);
    string("database_type", &mut meta);
    string("authwatch-test-Country", &mut meta);
    string("description", &mut meta);
    ctrl(7, 1, &mut meta);
    string("en", &mut meta);
    string("authwatch test database", &mut meta);
    string("ip_version", &mut meta);
    uint(5, 4, &mut meta);
    string("languages", &mut meta);
    ctrl(11, 1, &mut meta);
    string("en", &mut meta);
    string("node_count", &mut meta);
    uint(6, count as u64, &mut meta);
    string("record_size", &mut meta);
    uint(5, 24, &mut meta);
    out.extend_from_slice(&meta);
    out
}

/// A Redis server of its own (Debian's `redis-server`, installed by `scripts/test-deps.sh`):
/// on a loopback port, in a directory of its own, without persistence; killed on drop.
pub struct Redis {
    pub proc: Proc,
    pub port: u16,
    pub dir: PathBuf,
}

impl Redis {
    /// Starts one on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts one on `port` (again after [`kill`](Self::kill), for an outage).
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// Starts one listening on `port` with `args` added (`--port 0 --tls-port N …` for TLS
    /// only, `--requirepass …`); without `args` it also waits for a plain `PING`.
    pub fn start_with(port: u16, args: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("authwatch-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(dep("redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let proc = Proc {
            child,
            name: "redis-server".into(),
        };
        let addr: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
        wait_listening(addr, "redis-server");
        if !args.is_empty() {
            return Self { proc, port, dir };
        }
        eventually(20, "redis PING", || {
            let out = Command::new(dep("redis-cli"))
                .args(["-p", &port.to_string(), "ping"])
                .output()
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (text.trim() == "PONG").then_some(()).ok_or(text)
        });
        Self { proc, port, dir }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` with `args`, its output trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(dep("redis-cli"))
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CrowdSec Local API alone (`crowdsec -no-cs`), offline, on a loopback port, with its own
/// config folder and SQLite database: one watcher machine and one bouncer registered with
/// `cscli`, as an operator would. From Debian's package, unpacked by `scripts/test-deps.sh`.
pub struct Lapi {
    pub proc: Proc,
    pub port: u16,
    pub dir: PathBuf,
    pub machine: String,
    pub password: String,
    pub bouncer_key: String,
}

impl Lapi {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts one on `port` (one the monitor was pointed at before the LAPI was up).
    pub fn start_on(port: u16) -> Self {
        let dir =
            std::env::temp_dir().join(format!("authwatch-crowdsec-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let etc = repo().join(".test-deps/crowdsec/etc/crowdsec");
        for f in ["profiles.yaml", "simulation.yaml"] {
            std::fs::copy(etc.join(f), dir.join(f))
                .unwrap_or_else(|e| panic!("{f}: {e} (run scripts/test-deps.sh)"));
        }
        std::fs::write(dir.join("acquis.yaml"), "").unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "common:\n  daemonize: false\n  log_media: stdout\n  log_level: info\n  working_dir: {d}\n\
                 config_paths:\n  config_dir: {d}/\n  data_dir: {d}/data/\n  simulation_path: {d}/simulation.yaml\n  \
                 hub_dir: {d}/hub/\n  index_path: {d}/hub/.index.json\n  notification_dir: {d}/notifications/\n  \
                 plugin_dir: {d}/plugins/\n\
                 crowdsec_service:\n  acquisition_path: {d}/acquis.yaml\n\
                 cscli:\n  output: human\n\
                 db_config:\n  log_level: info\n  type: sqlite\n  db_path: {d}/data/crowdsec.db\n\
                 api:\n  client:\n    credentials_path: {d}/local_api_credentials.yaml\n  \
                 server:\n    log_level: info\n    listen_uri: 127.0.0.1:{port}\n    profiles_path: {d}/profiles.yaml\n    \
                 trusted_ips:\n      - 127.0.0.1\n\
                 prometheus:\n  enabled: false\n"
            ),
        )
        .unwrap();
        let machine = "authwatch-test".to_owned();
        let password = format!("pw-{}-{port}", std::process::id());
        let bouncer_key = format!("key{}x{port}", std::process::id());
        let creds = dir.join("local_api_credentials.yaml");
        cscli(
            &dir,
            &["machines", "add", &machine, "--password", &password, "-f"]
                .into_iter()
                .chain([creds.to_str().unwrap(), "--force"])
                .collect::<Vec<_>>(),
        );
        cscli(
            &dir,
            &["bouncers", "add", "authwatch-bouncer", "-k", &bouncer_key],
        );
        let log = std::fs::File::create(dir.join("lapi.log")).unwrap();
        let child = Command::new(dep("crowdsec"))
            .arg("-c")
            .arg(dir.join("config.yaml"))
            .arg("-no-cs")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("crowdsec");
        let proc = Proc {
            child,
            name: "crowdsec".into(),
        };
        wait_listening((Ipv4Addr::LOCALHOST, port).into(), "crowdsec");
        Self {
            proc,
            port,
            dir,
            machine,
            password,
            bouncer_key,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `cscli` with `args` on this LAPI: stdout, or the panic names stderr.
    pub fn cscli_ok(&self, args: &[&str]) -> String {
        cscli(&self.dir, args)
    }

    /// The decisions `cscli decisions list` shows (JSON), of `origin` (authwatch's are not of
    /// the two origins it shows by default).
    pub fn decisions(&self, origin: &str) -> Vec<serde_json::Value> {
        let out = self.cscli_ok(&["decisions", "list", "--origin", origin, "-o", "json"]);
        let alerts: serde_json::Value =
            serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null);
        alerts
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["decisions"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The LAPI's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("lapi.log")).unwrap_or_default()
    }
}

/// `cscli -c DIR/config.yaml ARGS`: stdout, or the panic names stderr.
fn cscli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(dep("cscli"))
        .arg("-c")
        .arg(dir.join("config.yaml"))
        .args(args)
        .output()
        .expect("cscli");
    assert!(
        out.status.success(),
        "cscli {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Lapi {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
