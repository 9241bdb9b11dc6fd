//! The weekly review of the spec ("review the authentication metrics weekly; update alert
//! thresholds as traffic patterns change"): `authwatch review --prometheus URL [--since 7d]
//! [--config FILE] --out DIR`.
//!
//! It reads the history of authwatch's metrics from a Prometheus through its HTTP API
//! (`query_range`, one point per 5 minutes) and writes:
//! - `review.md`: per day, the login, registration and token-validation volumes and failure
//!   ratios, the p95 per operation, rate limiting and invalid tokens; the alerts that fired;
//!   per rule, how often it fired, how close traffic came (the largest ratio of its 5-minute
//!   values to its threshold) and a suggested threshold;
//! - `review.html`: the same, self-contained, with inline SVG charts (no script, no network);
//! - `suggested.toml`: the suggested thresholds as `[alerts.rules.NAME]` sections to paste into
//!   `authwatch.toml`.
//!
//! **The method.** A rule's signal is computed from the exported series as Prometheus sees it
//! (the failure ratio over the rule's window with its minimum volume, the count over the
//! window, the p95 gauge, the mean token-validation time, the top address's failures), every
//! 5 minutes. The suggestion is the 99.9th percentile of those values plus a 25 % margin, so
//! that the week's normal traffic would have stayed under it, rounded to the unit's step;
//! never looser than the spec's value (unless `allow_looser`), nor tighter than a quarter of it
//! (a quiet week is no reason to page on a single failure). Rules whose signal the series
//! cannot express (spikes against a baseline, account-level rules, health checks) are
//! reported by their firings only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use authwatch_alerts::{Rule, RuleKind, Signal, ThresholdUnit};
use authwatch_layer::catalog::{def, Measure, Quantile};
use authwatch_layer::AuthOp;

/// One point every 5 minutes.
pub const STEP: Duration = Duration::from_secs(300);

/// Where the history comes from and what it is compared with.
#[derive(Debug, Clone)]
pub struct ReviewSettings {
    /// The Prometheus (`http://prometheus:9090`).
    pub prometheus: String,
    /// How far back (default 7 days).
    pub since: Duration,
    /// The end (default now).
    pub until: SystemTime,
    /// The rules in force (the defaults, or a configuration file's).
    pub rules: Vec<Rule>,
    /// Suggest thresholds looser than the spec's.
    pub allow_looser: bool,
}

/// What went wrong reading the history.
#[derive(Debug)]
pub struct ReviewError(pub String);

impl std::fmt::Display for ReviewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReviewError {}

/// One day's figures.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Day {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Successes and failures of login, registration and token validation.
    pub volumes: [(f64, f64); 3],
    /// Rate-limited requests.
    pub rate_limited: f64,
    /// Invalid-token attempts.
    pub invalid_tokens: f64,
    /// The day's largest p95 per operation (login, registration, token validation), in ms.
    pub p95_max: [Option<f64>; 3],
}

impl Day {
    /// The failure ratio of operation `i` (0 login, 1 registration, 2 token validation).
    #[must_use]
    pub fn failure_ratio(&self, i: usize) -> Option<f64> {
        let (s, f) = self.volumes[i];
        (s + f > 0.0).then(|| f / (s + f))
    }
}

/// One rule's week.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RuleReview {
    /// The rule.
    pub name: String,
    /// Its threshold now, and the spec's.
    pub threshold: f64,
    /// The spec's (the default rule's).
    pub spec: f64,
    /// The unit of both.
    pub unit: ThresholdUnit,
    /// Times it started firing (in-process engine, `auth_alerts_firing`).
    pub fired: u32,
    /// Time spent firing.
    pub firing_for: Duration,
    /// The largest 5-minute value of its signal, when the series express it.
    pub peak: Option<f64>,
    /// The 99.9th percentile of those values.
    pub p999: Option<f64>,
    /// The suggested threshold, when the series express the signal.
    pub suggested: Option<f64>,
    /// What to know about it.
    pub note: String,
}

impl RuleReview {
    /// How close traffic came: the peak over the threshold (1.0 or more: it crossed).
    #[must_use]
    pub fn closest(&self) -> Option<f64> {
        self.peak.map(|p| {
            if self.threshold > 0.0 {
                p / self.threshold
            } else {
                0.0
            }
        })
    }
}

/// The review.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Review {
    /// From and to.
    pub from: SystemTime,
    /// To.
    pub until: SystemTime,
    /// Per day.
    pub days: Vec<Day>,
    /// Per rule.
    pub rules: Vec<RuleReview>,
    /// The Prometheus read.
    pub prometheus: String,
    /// The 5-minute series behind the charts: per operation its attempts and failure ratio,
    /// the p95 per operation, rate limiting, invalid tokens, the alerts firing (title, unit,
    /// points: seconds since `from` and value).
    pub charts: Vec<(String, String, Vec<(f64, f64)>)>,
}

fn prom(m: Measure) -> String {
    def(m).prometheus_name()
}

/// A range query's one series (summed), or, with `by`, a series per label value.
struct Client {
    http: reqwest::blocking::Client,
    base: String,
    start: f64,
    end: f64,
}

type Series = Vec<(f64, f64)>;

impl Client {
    fn query(&self, q: &str) -> Result<BTreeMap<String, Series>, ReviewError> {
        let url = format!("{}/api/v1/query_range", self.base);
        let step = STEP.as_secs().to_string();
        let (start, end) = (format!("{:.3}", self.start), format!("{:.3}", self.end));
        let body = [
            ("query", q),
            ("start", start.as_str()),
            ("end", end.as_str()),
            ("step", step.as_str()),
        ]
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
        let r = self
            .http
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .map_err(|e| ReviewError(format!("{url}: {e}")))?;
        let status = r.status();
        let text = r.text().map_err(|e| ReviewError(format!("{url}: {e}")))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ReviewError(format!("{url}: {status}: not JSON ({e})")))?;
        if v["status"] != "success" {
            return Err(ReviewError(format!(
                "{url}: {q}: {}",
                v["error"].as_str().unwrap_or(&text)
            )));
        }
        let mut out = BTreeMap::new();
        for s in v["data"]["result"].as_array().into_iter().flatten() {
            let label = s["metric"]
                .as_object()
                .and_then(|m| m.values().next())
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned();
            let points = s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let t = p[0].as_f64()?;
                    let v: f64 = p[1].as_str()?.parse().ok()?;
                    v.is_finite().then_some((t, v))
                })
                .collect();
            out.insert(label, points);
        }
        Ok(out)
    }

    /// The one series of `q` (empty when it has none).
    fn one(&self, q: &str) -> Result<Series, ReviewError> {
        Ok(self.query(q)?.into_values().next().unwrap_or_default())
    }
}

fn window(d: Duration) -> String {
    authwatch_alerts::generate::prom_duration(d)
}

/// The 5-minute values of `rule`'s signal, as the exported series express it; `None` when
/// they cannot.
fn signal_query(rule: &Rule) -> Option<String> {
    let inc = |m: Measure, w: &str| format!("sum(increase({}[{w}]))", prom(m));
    match &rule.kind {
        RuleKind::FailureRatio {
            op,
            window: w,
            min_requests,
            ..
        } => {
            let w = window(*w);
            let (f, s) = (
                inc(Measure::Failure(*op), &w),
                inc(Measure::Success(*op), &w),
            );
            Some(format!(
                "({f} / (({f}) + ({s}))) and on() ((({f}) + ({s})) >= {min_requests})"
            ))
        }
        RuleKind::Count {
            signal, window: w, ..
        } => {
            let w = window(*w);
            let m = match signal {
                Signal::RateLimited => Measure::RateLimited,
                Signal::InvalidToken => Measure::InvalidToken,
                Signal::Lockout => Measure::Lockout,
                Signal::Failure(op) => Measure::Failure(*op),
                Signal::Success(op) => Measure::Success(*op),
                Signal::Attempts(_) => return None,
                _ => return None,
            };
            Some(inc(m, &w))
        }
        RuleKind::Percentile { op, quantile, .. } => {
            let q = if (*quantile - 0.95).abs() < 1e-9 {
                Quantile::P95
            } else if (*quantile - 0.99).abs() < 1e-9 {
                Quantile::P99
            } else {
                return None;
            };
            let name = prom(Measure::ResponseTimeQuantile(q));
            Some(match op {
                Some(op) => format!("max({name}{{auth_operation=\"{}\"}})", op.as_str()),
                None => format!("max({name})"),
            })
        }
        RuleKind::Mean {
            window: w,
            min_requests,
            ..
        } => {
            let w = window(*w);
            let h = prom(Measure::TokenValidationTime);
            Some(format!(
                "(sum(increase({h}_sum[{w}])) / sum(increase({h}_count[{w}]))) and on() (sum(increase({h}_count[{w}])) >= {min_requests})"
            ))
        }
        RuleKind::PerIpFailures { .. } => {
            Some(format!("max({})", prom(Measure::AttackTopIpFailures)))
        }
        _ => None,
    }
}

/// The `q` quantile of `values` (nearest rank).
fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

/// `x` rounded up to the unit's step: ratios to 0.01, milliseconds to 10, counts and
/// multiples to 1 and 0.5.
fn round_up(x: f64, unit: ThresholdUnit) -> f64 {
    let step = match unit {
        ThresholdUnit::Ratio => 0.01,
        ThresholdUnit::Milliseconds => 10.0,
        ThresholdUnit::Multiple => 0.5,
        _ => 1.0,
    };
    ((x / step).ceil() * step * 1e6).round() / 1e6
}

/// The suggestion for a rule from its 99.9th percentile: plus 25 %, rounded to the unit's
/// step, within a quarter of the spec's value and (unless `looser`) the spec's value.
#[must_use]
pub fn suggest(p999: f64, spec: f64, unit: ThresholdUnit, looser: bool) -> f64 {
    let mut s = round_up(p999 * 1.25, unit).max(round_up(spec / 4.0, unit));
    if !looser {
        s = s.min(spec);
    }
    if unit == ThresholdUnit::Ratio {
        s = s.min(1.0);
    }
    s
}

fn date_of(t: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let st = SystemTime::UNIX_EPOCH + Duration::from_secs(t as u64);
    humantime::format_rfc3339_seconds(st).to_string()[..10].to_owned()
}

/// Reads the history and builds the review.
///
/// # Errors
///
/// Prometheus cannot be reached or refuses a query.
pub fn run(s: &ReviewSettings) -> Result<Review, ReviewError> {
    let end = s
        .until
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let start = end - s.since.as_secs_f64();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| ReviewError(e.to_string()))?;
    let c = Client {
        http,
        base: s.prometheus.trim_end_matches('/').to_owned(),
        start,
        end,
    };
    let inc5 = |m: Measure| format!("sum(increase({}[5m]))", prom(m));
    let ops = [AuthOp::Login, AuthOp::Registration, AuthOp::TokenValidation];
    let mut days: BTreeMap<String, Day> = BTreeMap::new();
    let mut add = |series: &Series, f: &dyn Fn(&mut Day, f64)| {
        for (t, v) in series {
            let d = days.entry(date_of(*t)).or_insert_with(|| Day {
                date: date_of(*t),
                ..Day::default()
            });
            f(d, *v);
        }
    };
    for (i, op) in ops.iter().enumerate() {
        let succ = c.one(&inc5(Measure::Success(*op)))?;
        let fail = c.one(&inc5(Measure::Failure(*op)))?;
        add(&succ, &|d, v| d.volumes[i].0 += v);
        add(&fail, &|d, v| d.volumes[i].1 += v);
    }
    add(&c.one(&inc5(Measure::RateLimited))?, &|d, v| {
        d.rate_limited += v
    });
    add(&c.one(&inc5(Measure::InvalidToken))?, &|d, v| {
        d.invalid_tokens += v
    });
    let p95 = c.query(&format!(
        "max by (auth_operation) ({})",
        prom(Measure::ResponseTimeQuantile(Quantile::P95))
    ))?;
    for (i, op) in ops.iter().enumerate() {
        if let Some(series) = p95.get(op.as_str()) {
            add(series, &|d, v| {
                d.p95_max[i] = Some(d.p95_max[i].map_or(v, |m: f64| m.max(v)));
            });
        }
    }
    // The firings of the in-process engine.
    let firing = c.query(&format!(
        "max by (alert_name) ({})",
        prom(Measure::AlertsFiring)
    ))?;
    let spec_rules = authwatch_alerts::default_rules();
    let mut rules = Vec::new();
    for r in s.rules.iter().filter(|r| r.enabled) {
        let (mut fired, mut firing_for, mut was) = (0u32, Duration::ZERO, false);
        for (_, v) in firing.get(r.name.as_ref()).into_iter().flatten() {
            let on = *v > 0.0;
            if on && !was {
                fired += 1;
            }
            if on {
                firing_for += STEP;
            }
            was = on;
        }
        let spec = spec_rules
            .iter()
            .find(|d| d.name == r.name)
            .map_or(r.threshold(), Rule::threshold);
        let unit = r.threshold_unit();
        let (peak, p999, suggested, note) = match signal_query(r) {
            Some(q) => {
                let values: Vec<f64> = c.one(&q)?.into_iter().map(|(_, v)| v).collect();
                let peak = values.iter().copied().reduce(f64::max);
                let p999 = quantile(&values, 0.999);
                let suggested = p999.map(|p| suggest(p, spec, unit, s.allow_looser));
                let note = match (p999, suggested) {
                    (None, _) => "no data in the period".to_owned(),
                    (Some(p), Some(_)) if !s.allow_looser && p * 1.25 > spec => format!(
                        "normal traffic reaches {:.3} of the spec's value: the spec's threshold is kept (--allow-looser to go over it)",
                        p / spec
                    ),
                    (Some(_), Some(sg)) if (sg - r.threshold()).abs() < 1e-9 => {
                        "the threshold fits the week's traffic".to_owned()
                    }
                    _ => "99.9th percentile + 25 %".to_owned(),
                };
                (peak, p999, suggested, note)
            }
            None => (
                None,
                None,
                None,
                "evaluated in process only (a baseline, accounts or health checks): judged by its firings".to_owned(),
            ),
        };
        rules.push(RuleReview {
            name: r.name.to_string(),
            threshold: r.threshold(),
            spec,
            unit,
            fired,
            firing_for,
            peak,
            p999,
            suggested,
            note,
        });
    }
    // A critical and its warning (one group) keep the spec's distance: the critical's
    // suggestion is at least the warning's times the spec's ratio between them.
    let by_name: Vec<(String, String, authwatch_alerts::Severity)> = s
        .rules
        .iter()
        .map(|r| (r.name.to_string(), r.group.to_string(), r.severity))
        .collect();
    let snapshot = rules.clone();
    for r in &mut rules {
        let Some((_, group, sev)) = by_name.iter().find(|(n, ..)| *n == r.name) else {
            continue;
        };
        if *sev != authwatch_alerts::Severity::Critical {
            continue;
        }
        let warning = snapshot.iter().find(|w| {
            w.name != r.name
                && by_name.iter().any(|(n, g, sv)| {
                    *n == w.name && g == group && *sv == authwatch_alerts::Severity::Warning
                })
        });
        if let (Some(w), Some(sugg)) = (warning, r.suggested) {
            if let Some(ws) = w.suggested {
                let floor = round_up(ws * r.spec / w.spec.max(1e-12), r.unit);
                let mut v = sugg.max(floor);
                if !s.allow_looser {
                    v = v.min(r.spec);
                }
                r.suggested = Some(v);
            }
        }
    }
    let rel = |s: Series| -> Series { s.into_iter().map(|(t, v)| (t - start, v)).collect() };
    let mut charts = Vec::new();
    for op in ops {
        let (f, sc) = (inc5(Measure::Failure(op)), inc5(Measure::Success(op)));
        charts.push((
            format!("{} attempts per 5 minutes", op.as_str()),
            "attempts".to_owned(),
            rel(c.one(&format!("({f}) + ({sc})"))?),
        ));
        charts.push((
            format!("{} failure ratio", op.as_str()),
            "%".to_owned(),
            rel(c
                .one(&format!("100 * ({f}) / (({f}) + ({sc}))"))?
                .into_iter()
                .collect()),
        ));
    }
    for (op, series) in &p95 {
        charts.push((
            format!("p95 of {op} (ms)"),
            "ms".to_owned(),
            rel(series.clone()),
        ));
    }
    charts.push((
        "Rate-limited requests per 5 minutes".to_owned(),
        "requests".to_owned(),
        rel(c.one(&inc5(Measure::RateLimited))?),
    ));
    charts.push((
        "Invalid-token attempts per 5 minutes".to_owned(),
        "attempts".to_owned(),
        rel(c.one(&inc5(Measure::InvalidToken))?),
    ));
    charts.push((
        "Alerts firing (in-process engine)".to_owned(),
        "alerts".to_owned(),
        rel(c.one(&format!("sum({})", prom(Measure::AlertsFiring)))?),
    ));
    Ok(Review {
        from: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(start.max(0.0)),
        until: s.until,
        days: days.into_values().collect(),
        rules,
        prometheus: s.prometheus.clone(),
        charts,
    })
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{:.2} %", r * 100.0))
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), num)
}

impl Review {
    /// The rule reviews whose suggestion differs from the threshold in force.
    pub fn changes(&self) -> impl Iterator<Item = &RuleReview> {
        self.rules
            .iter()
            .filter(|r| r.suggested.is_some_and(|s| (s - r.threshold).abs() > 1e-9))
    }

    fn tables(&self) -> (Vec<[String; 10]>, Vec<[String; 9]>) {
        let days = self
            .days
            .iter()
            .map(|d| {
                [
                    d.date.clone(),
                    format!("{:.0}", d.volumes[0].0 + d.volumes[0].1),
                    pct(d.failure_ratio(0)),
                    format!("{:.0}", d.volumes[1].0 + d.volumes[1].1),
                    pct(d.failure_ratio(1)),
                    format!("{:.0}", d.volumes[2].0 + d.volumes[2].1),
                    pct(d.failure_ratio(2)),
                    format!("{:.0}", d.rate_limited),
                    format!("{:.0}", d.invalid_tokens),
                    d.p95_max
                        .iter()
                        .map(|p| opt(*p))
                        .collect::<Vec<_>>()
                        .join(" / "),
                ]
            })
            .collect();
        let rules = self
            .rules
            .iter()
            .map(|r| {
                [
                    r.name.clone(),
                    format!("{} ({})", num(r.threshold), r.unit.as_str()),
                    num(r.spec),
                    r.fired.to_string(),
                    humantime::format_duration(r.firing_for).to_string(),
                    opt(r.peak),
                    r.closest()
                        .map_or_else(|| "–".into(), |c| format!("{c:.2}×")),
                    opt(r.suggested),
                    r.note.clone(),
                ]
            })
            .collect();
        (days, rules)
    }

    const DAY_HEAD: [&'static str; 10] = [
        "day",
        "logins",
        "login failures",
        "registrations",
        "registration failures",
        "token validations",
        "token-validation failures",
        "rate limited",
        "invalid tokens",
        "p95 max ms (login / registration / token validation)",
    ];
    const RULE_HEAD: [&'static str; 9] = [
        "rule",
        "threshold",
        "spec",
        "fired",
        "firing for",
        "peak (5 min)",
        "closest",
        "suggested",
        "note",
    ];

    fn period(&self) -> String {
        format!(
            "{} to {}",
            humantime::format_rfc3339_seconds(self.from),
            humantime::format_rfc3339_seconds(self.until)
        )
    }

    /// `review.md`.
    #[must_use]
    pub fn markdown(&self) -> String {
        let (days, rules) = self.tables();
        let mut o = String::new();
        let _ = writeln!(o, "# Weekly authentication review\n");
        let _ = writeln!(o, "{} (from {}).\n", self.period(), self.prometheus);
        let table = |o: &mut String, head: &[&str], rows: &[Vec<String>]| {
            let _ = writeln!(o, "| {} |", head.join(" | "));
            let _ = writeln!(o, "|{}", "---|".repeat(head.len()));
            for r in rows {
                let _ = writeln!(o, "| {} |", r.join(" | "));
            }
            o.push('\n');
        };
        let _ = writeln!(o, "## Per day\n");
        let rows: Vec<Vec<String>> = days.iter().map(|r| r.to_vec()).collect();
        table(&mut o, &Self::DAY_HEAD, &rows);
        let _ = writeln!(o, "## Alerts and thresholds\n");
        let rows: Vec<Vec<String>> = rules.iter().map(|r| r.to_vec()).collect();
        table(&mut o, &Self::RULE_HEAD, &rows);
        let _ = writeln!(o, "## Suggested changes\n");
        if self.changes().next().is_none() {
            let _ = writeln!(o, "None: every threshold fits the period's traffic.\n");
        } else {
            let _ = writeln!(o, "In `suggested.toml`, to paste into `authwatch.toml` (then `authwatch config check`, `authwatch rules --config`, and a reload):\n");
            let _ = writeln!(o, "```toml\n{}```\n", self.suggested_toml());
        }
        let _ = writeln!(o, "## Method\n");
        let _ = writeln!(o, "Each rule's signal is computed every 5 minutes from the exported series, as Prometheus sees them: the failure ratio over the rule's window (with its minimum volume), the count over the window, the p95 gauge, the mean token-validation time, the top address's failures. \"Closest\" is the largest of those values over the threshold (1.00× or more: it crossed). The suggestion is the 99.9th percentile of the values plus 25 %, rounded up to the unit's step (0.01 for a ratio, 10 ms, 1 for a count), never looser than the spec's value unless `--allow-looser` is given, and never tighter than a quarter of it. Rules the series cannot express (spikes against a baseline, account-level rules, health checks) are judged by their firings (`auth_alerts_firing`).");
        o
    }

    /// `suggested.toml`: the suggested thresholds that differ from those in force.
    #[must_use]
    pub fn suggested_toml(&self) -> String {
        let mut o = String::new();
        for r in self.changes() {
            let _ = writeln!(
                o,
                "[alerts.rules.{}]\nthreshold = {}   # was {}; 99.9th percentile {}\n",
                r.name,
                num(r.suggested.unwrap_or(r.threshold)),
                num(r.threshold),
                opt(r.p999)
            );
        }
        o
    }

    /// `review.html`: self-contained (inline CSS and SVG, no script, nothing fetched).
    #[must_use]
    pub fn html(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let (days, rules) = self.tables();
        let table = |head: &[&str], rows: Vec<Vec<String>>| {
            let mut t = String::from("<table><tr>");
            for h in head {
                let _ = write!(t, "<th>{}</th>", esc(h));
            }
            t.push_str("</tr>");
            for r in rows {
                t.push_str("<tr>");
                for c in r {
                    let _ = write!(t, "<td>{}</td>", esc(&c));
                }
                t.push_str("</tr>");
            }
            t.push_str("</table>");
            t
        };
        let mut charts = String::new();
        let span = self
            .until
            .duration_since(self.from)
            .unwrap_or_default()
            .as_secs_f64()
            .max(1.0);
        for (i, (title, unit, series)) in self.charts.iter().enumerate() {
            let max = series.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9);
            let (w, h) = (900.0, 160.0);
            let points: Vec<String> = series
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", t / span * w, h - v / max * (h - 10.0)))
                .collect();
            let _ = write!(
                charts,
                "<figure><figcaption>{}</figcaption><svg id=\"chart-{i}\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\"><rect width=\"{w}\" height=\"{h}\" fill=\"#fafafa\"/><polyline fill=\"none\" stroke=\"#2563eb\" stroke-width=\"1.2\" points=\"{}\"/><text x=\"4\" y=\"12\" font-size=\"11\">max {} {}</text></svg></figure>",
                esc(title),
                esc(title),
                points.join(" "),
                num((max * 1000.0).round() / 1000.0),
                esc(unit)
            );
        }
        let suggested = if self.changes().next().is_none() {
            "<p>None: every threshold fits the period's traffic.</p>".to_owned()
        } else {
            format!(
                "<pre id=\"suggested\">{}</pre>",
                esc(&self.suggested_toml())
            )
        };
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Weekly authentication review</title><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\"><style>body{{font:14px system-ui,sans-serif;margin:2em;color:#111}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}td:first-child,th:first-child,td:last-child{{text-align:left}}figure{{margin:1em 0}}</style></head><body><h1>Weekly authentication review</h1><p id=\"period\">{}</p><h2>Per day</h2>{}<h2>Charts</h2>{}<h2>Alerts and thresholds</h2>{}<h2>Suggested changes</h2>{}<h2>Method</h2><p>{}</p></body></html>\n",
            esc(&self.period()),
            table(&Self::DAY_HEAD, days.into_iter().map(|r| r.to_vec()).collect()),
            charts,
            table(&Self::RULE_HEAD, rules.into_iter().map(|r| r.to_vec()).collect()),
            suggested,
            esc("Each rule's signal is computed every 5 minutes from the exported series; the suggestion is the 99.9th percentile plus 25 %, rounded up, never looser than the spec's value unless --allow-looser, never tighter than a quarter of it. Rules the series cannot express are judged by their firings."),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suggestion_is_the_999th_percentile_plus_a_margin_within_the_spec() {
        // Normal traffic at 8 % failures: 10 % is 25 % over it, under the spec's 20 %.
        assert!((suggest(0.08, 0.2, ThresholdUnit::Ratio, false) - 0.10).abs() < 1e-9);
        // Over the spec: the spec stays, unless looser is allowed.
        assert!((suggest(0.3, 0.2, ThresholdUnit::Ratio, false) - 0.2).abs() < 1e-9);
        assert!((suggest(0.3, 0.2, ThresholdUnit::Ratio, true) - 0.38).abs() < 1e-9);
        // A quiet week: a quarter of the spec at least.
        assert!((suggest(0.0, 500.0, ThresholdUnit::Milliseconds, false) - 130.0).abs() < 1e-9);
        assert!((suggest(212.0, 500.0, ThresholdUnit::Milliseconds, false) - 270.0).abs() < 1e-9);
        assert!((suggest(7.2, 50.0, ThresholdUnit::Count, false) - 13.0).abs() < 1e-9);
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.999), Some(999.0));
        assert_eq!(quantile(&[], 0.999), None);
    }
}
