//! A real Prometheus scrapes the axum example's `/metrics` (with a bearer token) and the test
//! reads every series back through Prometheus's HTTP API under the names the metric reference (docs/guide/metrics.md) documents.
//! Needs `scripts/test-deps.sh`.

mod real;

use authwatch::metrics::InstrumentKind;
use authwatch::CATALOG;
use real::*;

fn query_value(http: &Http, prom: std::net::SocketAddr, q: &str) -> Result<f64, String> {
    let r = http.prom_query(prom, q);
    let v = r
        .get(0)
        .and_then(|s| s["value"][1].as_str())
        .ok_or_else(|| format!("{q}: no result {r}"))?;
    v.parse().map_err(|e| format!("{q}: {v}: {e}"))
}

#[test]
fn prometheus_scrapes_the_documented_names() {
    let token = "scrape-token-123";
    // Fleet mode on a Redis of its own, for its two instruments.
    let redis = Redis::start();
    let ex = Example::start(
        "axum",
        &["--port", "0"],
        &[
            ("METRICS_TOKEN", token.into()),
            ("AUTHWATCH_REDIS_URL", redis.url()),
        ],
    );
    let prom = Prometheus::start(
        "accounts",
        &[ex.addr],
        &format!("    authorization:\n      credentials: {token}\n"),
    );
    let http = Http::new();
    // Without the token, /metrics refuses.
    assert_eq!(http.get(&format!("http://{}/metrics", ex.addr)).0, 401);
    let want = drive_axum(&http, ex.addr);

    eventually(30, "the target is up", || {
        match query_value(&http, prom.addr, "up{job=\"accounts\"}") {
            Ok(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // Every expected value, under the Prometheus name the metric reference documents for its instrument.
    for (metric, attrs, v) in &want {
        let def = CATALOG.iter().find(|d| d.name == *metric).unwrap();
        let mut name = def.prometheus_name();
        if def.kind == InstrumentKind::Histogram {
            name += "_count";
        }
        let labels: Vec<String> = attrs
            .iter()
            .map(|(k, v)| format!("{}=\"{v}\"", k.replace('.', "_")))
            .collect();
        let q = format!("sum({name}{{{}}})", labels.join(","));
        eventually(30, &q, || match query_value(&http, prom.addr, &q) {
            Ok(got) if got == *v => Ok(()),
            other => Err(format!("want {v}, got {other:?}")),
        });
    }
    // Every catalog instrument is a series, with its exact name and type.
    for d in CATALOG.iter() {
        let name = match d.kind {
            InstrumentKind::Histogram => format!("{}_bucket", d.prometheus_name()),
            _ => d.prometheus_name(),
        };
        let q = format!("count({name})");
        eventually(30, &q, || match query_value(&http, prom.addr, &q) {
            Ok(n) if n >= 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        });
    }
    // The things dashboards and rules do with them.
    // (Over the raw cumulative buckets: all traffic may predate the first scrape, so a rate()
    // could be empty.)
    let q = "histogram_quantile(0.95, sum by (le) (auth_response_time_ms_bucket{auth_operation=\"login\"}))";
    let p95 = query_value(&http, prom.addr, q).unwrap();
    assert!(p95 > 0.0 && p95 <= 250.0, "{q} = {p95}");
    let gauge = query_value(
        &http,
        prom.addr,
        "auth_response_time_p95_ms{auth_operation=\"login\"}",
    )
    .unwrap();
    assert!(gauge > 0.5, "{gauge}");
    let health = query_value(
        &http,
        prom.addr,
        "auth_health_status{auth_health_check=\"user-store\"}",
    )
    .unwrap();
    assert_eq!(health, 1.0);
    // No series carries an address, an e-mail or a token.
    let all = http
        .prom_query(prom.addr, "{__name__=~\"auth_.+\"}")
        .to_string();
    for s in SECRETS.iter().filter(|s| **s != "127.0.0.1") {
        assert!(!all.contains(s), "{s} in {all}");
    }
    // Every query of the generated Grafana dashboards parses and runs on this real Prometheus,
    // over the example's data (Grafana's variables replaced as Grafana would), and the
    // dashboards' core panels have data.
    // rate() needs two samples in its range.
    eventually(30, "three scrapes", || {
        match query_value(
            &http,
            prom.addr,
            "count_over_time(up{job=\"accounts\"}[5m])",
        ) {
            Ok(n) if n >= 3.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let mut empty = Vec::new();
    for (panel, q) in authwatch::alerts::generate::dashboard_queries() {
        let q = q
            .replace("$job", ".+")
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1h");
        let r = http.prom_query(prom.addr, &q);
        if r.as_array().is_none_or(Vec::is_empty) {
            empty.push(panel);
        }
    }
    // Only the alert tables may be empty: nothing fires on this quiet app.
    assert!(
        empty
            .iter()
            .all(|p| p.contains("alerts firing") || p.contains("Firing alerts")),
        "panels without data: {empty:#?}"
    );
    ex.stop();
}
