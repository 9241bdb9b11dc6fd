//! Generated configuration: Prometheus alerting rules, an Alertmanager config and Grafana
//! dashboards, all over the catalog's Prometheus names, so that they cannot drift from what
//! authwatch exports.

use std::fmt::Write as _;
use std::time::Duration;

use authwatch_layer::catalog::{def, Measure, Quantile};
use authwatch_layer::AuthOp;
use serde_json::{json, Value};

use crate::rules::{Channel, Rule, RuleKind, Signal};

fn prom(m: Measure) -> String {
    def(m).prometheus_name()
}

/// A duration in Prometheus syntax (`5m`, `90s`, `1h`).
#[must_use]
pub fn prom_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        format!("{}ms", d.as_millis().max(1))
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn metrics_of(s: Signal) -> Vec<String> {
    match s {
        Signal::Success(op) => vec![prom(Measure::Success(op))],
        Signal::Failure(op) => vec![prom(Measure::Failure(op))],
        Signal::Attempts(op) => vec![prom(Measure::Success(op)), prom(Measure::Failure(op))],
        Signal::RateLimited => vec![prom(Measure::RateLimited)],
        Signal::InvalidToken => vec![prom(Measure::InvalidToken)],
        Signal::Lockout => vec![prom(Measure::Lockout)],
    }
}

fn increase(metric: &str, range: &str, offset: Option<&str>) -> String {
    match offset {
        Some(o) => format!("sum by (job) (increase({metric}[{range}] offset {o}))"),
        None => format!("sum by (job) (increase({metric}[{range}]))"),
    }
}

/// The sum of the increases of `metrics`; a counter that has no series yet (no success so far)
/// counts as zero instead of emptying the sum.
fn total(metrics: &[String], range: &str, offset: Option<&str>) -> String {
    let parts: Vec<String> = metrics.iter().map(|m| increase(m, range, offset)).collect();
    if parts.len() == 1 {
        return parts[0].clone();
    }
    let mut terms = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let others: Vec<String> = parts
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, o)| format!("{o} * 0"))
            .collect();
        terms.push(format!("({p} or {})", others.join(" or ")));
    }
    terms.join(" + ")
}

fn num(x: f64) -> String {
    format!("{x}")
}

/// One generated Prometheus alerting rule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PromRule {
    /// `alert:`.
    pub alert: String,
    /// `expr:`.
    pub expr: String,
    /// `for:`, when not zero.
    pub for_: Option<String>,
    /// `labels:`.
    pub labels: Vec<(String, String)>,
    /// `annotations:` (static text: Prometheus renders them, the tests compare them).
    pub annotations: Vec<(String, String)>,
    /// What the in-process engine adds, written as a comment above the rule.
    pub comment: String,
}

/// The Prometheus form of each enabled rule that the exported series can express (see
/// [`in_process_only`]). `runbook_base` prefixes the `runbook_url`s
/// (`{base}#{alert in lower case}`).
#[must_use]
pub fn prometheus_rules(rules: &[Rule], runbook_base: &str) -> Vec<PromRule> {
    rules
        .iter()
        .filter(|r| r.enabled)
        .filter_map(|r| prometheus_rule(r, runbook_base))
        .collect()
}

/// Why a rule has no Prometheus form, when it has none: three of the account-level rules read
/// who failed from where, which no metric carries (accounts and addresses never become
/// labels; `AuthAccountBruteForce` has the top account's count as a gauge). The generated
/// file says so in a comment; the in-process engine fires them.
#[must_use]
pub fn in_process_only(r: &Rule) -> Option<&'static str> {
    match r.kind {
        RuleKind::PerIpAccounts { .. } => {
            Some("distinct accounts per address: no exported series carries accounts or addresses")
        }
        RuleKind::PerAccountAddresses { .. } => {
            Some("distinct addresses per account: no exported series carries accounts or addresses")
        }
        RuleKind::CredentialStuffing { .. } => Some(
            "distinct failing accounts against their baseline: no exported series carries accounts",
        ),
        _ => None,
    }
}

fn prometheus_rule(r: &Rule, runbook_base: &str) -> Option<PromRule> {
    let mut for_ = (!r.for_.is_zero()).then(|| prom_duration(r.for_));
    let (expr, description, comment) = match r.kind {
        RuleKind::FailureRatio {
            op,
            window,
            above,
            min_requests,
        } => {
            let w = prom_duration(window);
            let fail = [prom(Measure::Failure(op))];
            let attempts = metrics_of(Signal::Attempts(op));
            let f = total(&fail, &w, None);
            let t = total(&attempts, &w, None);
            (
                format!("({f})\n/\n({t})\n> {}\nand\n({t}) >= {min_requests}", num(above)),
                format!(
                    "More than {:.0}% of {} attempts failed over {w} (at least {min_requests} attempts).",
                    above * 100.0,
                    op.as_str()
                ),
                "Same condition as the in-process engine, over the exported counters.".to_owned(),
            )
        }
        RuleKind::Count {
            signal,
            window,
            above,
        } => {
            let w = prom_duration(window);
            (
                format!("{} > {above}", total(&metrics_of(signal), &w, None)),
                format!("More than {above} {} in {w}.", signal.describe()),
                "increase() extrapolates within the window, and a 1m window needs a scrape interval of 30s or less; the engine counts exactly.".to_owned(),
            )
        }
        RuleKind::Percentile {
            op,
            quantile,
            above,
            min_requests,
        } => {
            let count = format!("{}_count", prom(Measure::ResponseTime));
            let sel = op.map_or_else(String::new, |op| {
                format!("{{auth_operation=\"{}\"}}", op.as_str())
            });
            // The exact HDR gauge when authwatch exports that quantile, else the histogram.
            let gauge = [Quantile::P50, Quantile::P95, Quantile::P99]
                .into_iter()
                .find(|q| (q.fraction() - quantile).abs() < 1e-9);
            let value = match gauge {
                Some(q) => format!(
                    "max by (job, auth_operation) ({}{sel})",
                    prom(Measure::ResponseTimeQuantile(q))
                ),
                None => format!(
                    "histogram_quantile({quantile}, sum by (job, auth_operation, le) (rate({}_bucket{sel}[5m])))",
                    prom(Measure::ResponseTime)
                ),
            };
            (
                format!(
                    "{value} > {}\nand on (job, auth_operation)\nsum by (job, auth_operation) (increase({count}{sel}[5m])) >= {min_requests}",
                    above.as_millis()
                ),
                format!(
                    "p{} response time of {{{{ $labels.auth_operation }}}} above {} ms.",
                    num((quantile * 1000.0).round() / 10.0),
                    above.as_millis()
                ),
                "The gauge is the exact HDR percentile over authwatch's sliding window, the same number the engine reads.".to_owned(),
            )
        }
        RuleKind::Mean {
            op,
            window,
            above,
            min_requests,
        } => {
            let w = prom_duration(window);
            let hist = if op == AuthOp::TokenValidation {
                prom(Measure::TokenValidationTime)
            } else {
                prom(Measure::ResponseTime)
            };
            let sel = if op == AuthOp::TokenValidation {
                String::new()
            } else {
                format!("{{auth_operation=\"{}\"}}", op.as_str())
            };
            let n = format!("sum by (job) (increase({hist}_count{sel}[{w}]))");
            (
                format!(
                    "sum by (job) (increase({hist}_sum{sel}[{w}]))\n/\n{n}\n> {}\nand\n{n} >= {min_requests}",
                    above.as_millis()
                ),
                format!(
                    "Mean {} time above {} ms over {w}.",
                    op.as_str(),
                    above.as_millis()
                ),
                "Mean from the histogram's sum and count; the engine uses the exact sum.".to_owned(),
            )
        }
        RuleKind::Spike {
            signal,
            window,
            baseline,
            factor,
            min_count,
        } => {
            let w = prom_duration(window);
            let b = prom_duration(baseline);
            let m = metrics_of(signal);
            let cur = total(&m, &w, None);
            let scale = window.as_secs_f64() / baseline.as_secs_f64();
            let base = format!("({}) * {}", total(&m, &b, Some(&w)), num(scale));
            (
                format!(
                    "({cur})\n>= {} * ({base})\nand\n({cur}) > ({base})\nand\n({cur}) >= {min_count}",
                    num(factor)
                ),
                format!(
                    "{} over {w} at {}x or more of their average per {w} over the {b} before (at least {min_count}).",
                    signal.describe(),
                    num(factor)
                ),
                "The baseline is the average over the hour before the window; with no series then (a new deployment), the rule waits, as the engine does.".to_owned(),
            )
        }
        RuleKind::PerIpFailures { above } => (
            format!("max by (job) ({}) > {above}", prom(Measure::AttackTopIpFailures)),
            format!("One client IP made more than {above} failed auth attempts in 10 minutes."),
            "Metrics never carry client IPs: this fires on the largest per-IP count. The in-process engine fires one alert per attacking IP, with the address in the client_ip label, and lists them on /auth/dashboard.".to_owned(),
        ),
        RuleKind::Distributed {
            min_ips,
            min_failures,
        } => (
            format!(
                "max by (job, http_route) ({}) >= {min_ips}",
                prom(Measure::AttackFailingIps)
            ),
            format!(
                "Failed auth attempts on {{{{ $labels.http_route }}}} from {min_ips} or more client IPs in 10 minutes."
            ),
            format!("The engine also requires {min_failures} failures on the route."),
        ),
        RuleKind::PerAccountFailures { above } => (
            format!(
                "max by (job) ({}) > {above}",
                prom(Measure::AttackTopAccountFailures)
            ),
            format!("One account had more than {above} failed logins in 10 minutes."),
            "Metrics never carry accounts: this fires on the largest per-account count. The in-process engine fires one alert per account, with the account in the user_id label.".to_owned(),
        ),
        RuleKind::PerIpAccounts { .. }
        | RuleKind::PerAccountAddresses { .. }
        | RuleKind::CredentialStuffing { .. } => return None,
        RuleKind::HealthFailures { above } => {
            // `above + 1` consecutive evaluations at a 10 s interval, unless the rule says.
            if for_.is_none() && above > 0 {
                for_ = Some(prom_duration(Duration::from_secs(10 * u64::from(above))));
            }
            let uptime = prom(Measure::Uptime);
            (
                // Unhealthy, or not answering at all: a target that exported authwatch's metrics
                // in the last hour and is now down.
                format!(
                    "min by (job) ({}{{auth_health_check=\"overall\"}}) == 0\nor on (job)\n(min by (job) (up) == 0 and on (job) max by (job) (max_over_time({uptime}[1h])) > 0)",
                    prom(Measure::HealthStatus)
                ),
                format!("The health checks failed, or the service did not answer its scrape, in more than {above} consecutive evaluations."),
                format!(
                    "`for` covers {} consecutive evaluations at a 10 s evaluation interval; the engine counts runs of the checks.",
                    above + 1
                ),
            )
        }
    };
    Some(PromRule {
        alert: r.name.to_string(),
        expr,
        for_,
        labels: vec![
            ("severity".into(), r.severity.as_str().into()),
            ("notify".into(), r.notify_label()),
            ("alertgroup".into(), r.group.to_string()),
        ],
        annotations: vec![
            ("summary".into(), r.summary.to_string()),
            ("description".into(), description),
            (
                "runbook_url".into(),
                format!("{runbook_base}#{}", r.runbook_anchor()),
            ),
        ],
        comment,
    })
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// The rules file (`groups: [{name: authwatch, rules: …}]`) as YAML.
#[must_use]
pub fn prometheus_rules_yaml(rules: &[Rule], runbook_base: &str) -> String {
    let mut out = String::from(
        "# Generated by `authwatch rules`. Prometheus alerting rules for the metrics authwatch exports.\n\
         # Every name comes from authwatch's metric catalog; regenerate after upgrading authwatch.\n\
         groups:\n  - name: authwatch\n    rules:\n",
    );
    for r in rules.iter().filter(|r| r.enabled) {
        if let Some(why) = in_process_only(r) {
            let _ = writeln!(
                out,
                "      # {}: in-process only ({why}); authwatch's engine fires it.",
                r.name
            );
        }
    }
    for r in prometheus_rules(rules, runbook_base) {
        let _ = writeln!(out, "      # {}", r.comment);
        let _ = writeln!(out, "      - alert: {}", r.alert);
        out += "        expr: |\n";
        for line in r.expr.lines() {
            let _ = writeln!(out, "          {line}");
        }
        if let Some(f) = &r.for_ {
            let _ = writeln!(out, "        for: {f}");
        }
        out += "        labels:\n";
        for (k, v) in &r.labels {
            let _ = writeln!(out, "          {k}: {}", yaml_str(v));
        }
        out += "        annotations:\n";
        for (k, v) in &r.annotations {
            let _ = writeln!(out, "          {k}: {}", yaml_str(v));
        }
    }
    out
}

/// An Alertmanager config: routes by alert name (from each rule's channels) and severity to
/// three receivers, `pager`, `slack` and `email`, with placeholders for the secrets, and a
/// critical alert inhibiting the warning of its group.
#[must_use]
pub fn alertmanager_yaml(rules: &[Rule]) -> String {
    let names = |c: Channel| {
        rules
            .iter()
            .filter(|r| r.enabled && r.channels.contains(&c))
            .map(|r| r.name.to_string())
            .collect::<Vec<_>>()
            .join("|")
    };
    let mut routes = String::new();
    for (receiver, c) in [
        ("pager", Channel::Page),
        ("email", Channel::Email),
        ("slack", Channel::Slack),
        ("security", Channel::Security),
    ] {
        let n = names(c);
        if n.is_empty() {
            continue;
        }
        let _ = write!(
            routes,
            "    - receiver: {receiver}\n      matchers: ['alertname=~\"{n}\"']\n      continue: true\n      routes:\n        - matchers: ['severity=\"critical\"']\n          group_wait: 10s\n          repeat_interval: 1h\n"
        );
    }
    format!(
        "# Generated by `authwatch alertmanager`. Replace the REPLACE_ME placeholders (or use the\n\
         # *_file settings) before use; check with `amtool check-config`.\n\
         global:\n\
         \x20 resolve_timeout: 5m\n\
         \x20 smtp_smarthost: 'smtp.example.com:587'\n\
         \x20 smtp_from: 'authwatch@example.com'\n\
         \x20 smtp_auth_username: 'REPLACE_ME'\n\
         \x20 smtp_auth_password: 'REPLACE_ME'\n\
         \x20 slack_api_url: 'https://hooks.slack.com/services/REPLACE/ME/PLEASE'\n\
         route:\n\
         \x20 receiver: slack\n\
         \x20 group_by: [alertname, service, client_ip, auth_operation, http_route]\n\
         \x20 group_wait: 30s\n\
         \x20 group_interval: 5m\n\
         \x20 repeat_interval: 4h\n\
         \x20 routes:\n{routes}\
         receivers:\n\
         \x20 - name: pager\n\
         \x20   pagerduty_configs:\n\
         \x20     - routing_key: 'REPLACE_ME'\n\
         \x20       severity: critical\n\
         \x20       send_resolved: true\n\
         \x20 - name: slack\n\
         \x20   slack_configs:\n\
         \x20     - channel: '#auth-alerts'\n\
         \x20       send_resolved: true\n\
         \x20       title: '[{{{{ .Status | toUpper }}}}] {{{{ .CommonLabels.alertname }}}}'\n\
         \x20       text: '{{{{ range .Alerts }}}}{{{{ .Annotations.description }}}} (runbook: {{{{ .Annotations.runbook_url }}}}){{{{ \"\\n\" }}}}{{{{ end }}}}'\n\
         \x20 - name: email\n\
         \x20   email_configs:\n\
         \x20     - to: 'auth-oncall@example.com'\n\
         \x20       send_resolved: true\n\
         \x20 - name: security\n\
         \x20   email_configs:\n\
         \x20     - to: 'security@example.com'\n\
         \x20       send_resolved: true\n\
         \x20   slack_configs:\n\
         \x20     - channel: '#security-incidents'\n\
         \x20       send_resolved: true\n\
         \x20       title: '[{{{{ .Status | toUpper }}}}] {{{{ .CommonLabels.alertname }}}}'\n\
         \x20       text: '{{{{ range .Alerts }}}}{{{{ .Annotations.description }}}} (runbook: {{{{ .Annotations.runbook_url }}}}){{{{ \"\\n\" }}}}{{{{ end }}}}'\n\
         inhibit_rules:\n\
         \x20 - source_matchers: ['severity=\"critical\"']\n\
         \x20   target_matchers: ['severity=\"warning\"']\n\
         \x20   equal: [alertgroup, service, auth_operation]\n"
    )
}

fn target(expr: &str, legend: &str, ref_id: char) -> Value {
    json!({
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "expr": expr,
        "legendFormat": legend,
        "refId": ref_id.to_string(),
    })
}

fn panel(id: u32, title: &str, kind: &str, unit: &str, targets: &[(&str, &str)]) -> Value {
    let (x, y) = (((id - 1) % 2) * 12, ((id - 1) / 2) * 8);
    json!({
        "id": id,
        "title": title,
        "type": kind,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": targets.iter().zip('A'..='Z').map(|((e, l), r)| target(e, l, r)).collect::<Vec<_>>(),
    })
}

fn dashboard(uid: &str, title: &str, panels: Vec<Value>) -> Value {
    json!({
        "uid": uid,
        "title": title,
        "tags": ["authwatch", "auth"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
            {"name": "job", "type": "query", "label": "Service",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": "label_values(auth_uptime_seconds, job)", "includeAll": true, "multi": true,
             "allValue": ".+", "refresh": 2},
        ]},
        "panels": panels,
    })
}

/// The three dashboards of the spec (Authentication, Security, Performance) as Grafana JSON:
/// `(file name, dashboard)`. Queries filter on `job=~"$job"` and use `$__rate_interval`.
#[must_use]
pub fn grafana_dashboards() -> Vec<(String, Value)> {
    grafana_dashboards_for(&crate::default_rules())
}

/// "alerts at 10% and 20%": the thresholds of the enabled rules `names`, as a panel title
/// says them.
fn alerts_at(rules: &[Rule], names: &[&str], percent: bool, what: &str) -> String {
    let shown: Vec<String> = names
        .iter()
        .filter_map(|n| rules.iter().find(|r| r.name == *n && r.enabled))
        .map(|r| {
            let v = if percent {
                r.threshold() * 100.0
            } else {
                r.threshold()
            };
            let v = (v * 1000.0).round() / 1000.0;
            if percent {
                format!("{v}%")
            } else {
                format!("{v}")
            }
        })
        .collect();
    if shown.is_empty() {
        return "no alert".into();
    }
    format!(
        "alerts at {what}{}{}",
        shown.join(" and "),
        if percent { "" } else { " ms" }
    )
}

/// [`grafana_dashboards`] with the thresholds of `rules` in the panel titles (the rules of a
/// configuration file).
#[must_use]
pub fn grafana_dashboards_for(rules: &[Rule]) -> Vec<(String, Value)> {
    let j = "{job=~\"$job\"}";
    let rate = |m: Measure| format!("sum by (job) (rate({}{j}[$__rate_interval]))", prom(m));
    let ratio = |op: AuthOp| {
        let f = prom(Measure::Failure(op));
        let s = prom(Measure::Success(op));
        format!(
            "sum by (job) (rate({f}{j}[$__rate_interval])) / (sum by (job) (rate({f}{j}[$__rate_interval])) + (sum by (job) (rate({s}{j}[$__rate_interval])) or sum by (job) (rate({f}{j}[$__rate_interval])) * 0))"
        )
    };
    let p = |q: Quantile| {
        format!(
            "max by (auth_operation) ({}{j})",
            prom(Measure::ResponseTimeQuantile(q))
        )
    };
    let hist_q = |h: Measure, by: &str| {
        format!(
            "histogram_quantile(0.95, sum by (le, {by}) (rate({}_bucket{j}[$__rate_interval])))",
            prom(h)
        )
    };
    let tv = prom(Measure::TokenValidationTime);
    let rt = prom(Measure::ResponseTime);
    let db = prom(Measure::DbQueryTime);
    let by_reason = |op: AuthOp| {
        format!(
            "sum by (auth_failure_reason) (rate({}{j}[$__rate_interval]))",
            prom(Measure::Failure(op))
        )
    };
    let authentication = vec![
        panel(
            1,
            "Login success / failure rate",
            "timeseries",
            "reqps",
            &[
                (&rate(Measure::Success(AuthOp::Login)), "success {{job}}"),
                (&rate(Measure::Failure(AuthOp::Login)), "failure {{job}}"),
            ],
        ),
        panel(
            2,
            &format!(
                "Login failure ratio ({})",
                alerts_at(
                    rules,
                    &["AuthLoginFailureRateElevated", "AuthLoginFailureRateHigh"],
                    true,
                    ""
                )
            ),
            "timeseries",
            "percentunit",
            &[(&ratio(AuthOp::Login), "{{job}}")],
        ),
        panel(
            3,
            "Registration success / failure rate",
            "timeseries",
            "reqps",
            &[
                (
                    &rate(Measure::Success(AuthOp::Registration)),
                    "success {{job}}",
                ),
                (
                    &rate(Measure::Failure(AuthOp::Registration)),
                    "failure {{job}}",
                ),
            ],
        ),
        panel(
            4,
            "Token validation rate",
            "timeseries",
            "reqps",
            &[
                (
                    &rate(Measure::Success(AuthOp::TokenValidation)),
                    "valid {{job}}",
                ),
                (
                    &rate(Measure::Failure(AuthOp::TokenValidation)),
                    "invalid {{job}}",
                ),
            ],
        ),
        panel(
            5,
            "Response time percentiles by operation (HDR, sliding window)",
            "timeseries",
            "ms",
            &[
                (&p(Quantile::P50), "p50 {{auth_operation}}"),
                (&p(Quantile::P95), "p95 {{auth_operation}}"),
                (&p(Quantile::P99), "p99 {{auth_operation}}"),
            ],
        ),
        panel(
            6,
            "Active users and sessions",
            "timeseries",
            "short",
            &[
                (
                    &format!("sum by (job) ({}{j})", prom(Measure::ActiveUsers)),
                    "users (estimate) {{job}}",
                ),
                (
                    &format!("sum by (job) ({}{j})", prom(Measure::ActiveSessions)),
                    "sessions {{job}}",
                ),
            ],
        ),
        panel(
            7,
            "Refresh, logout and password reset",
            "timeseries",
            "reqps",
            &[
                (
                    &rate(Measure::Success(AuthOp::TokenRefresh)),
                    "refresh {{job}}",
                ),
                (&rate(Measure::Success(AuthOp::Logout)), "logout {{job}}"),
                (
                    &rate(Measure::Success(AuthOp::PasswordReset)),
                    "password reset {{job}}",
                ),
            ],
        ),
        panel(
            8,
            "Firing alerts",
            "table",
            "short",
            &[(
                &format!(
                    "sum by (alert_name, alert_severity) ({}{j}) > 0",
                    prom(Measure::AlertsFiring)
                ),
                "{{alert_name}}",
            )],
        ),
    ];
    let security = vec![
        panel(1, "Failed attempts from the top IP (brute force at > 50 in 10 min)", "timeseries", "short", &[
            (&format!("max by (job) ({}{j})", prom(Measure::AttackTopIpFailures)), "top IP {{job}}"),
            (&format!("max by (job) ({}{j})", prom(Measure::AttackSuspectedIps)), "IPs over the threshold {{job}}"),
        ]),
        panel(2, "Distinct failing IPs by route (distributed attacks)", "timeseries", "short", &[
            (&format!("max by (http_route) ({}{j})", prom(Measure::AttackFailingIps)), "{{http_route}}"),
        ]),
        panel(3, "Failed logins by reason", "timeseries", "reqps", &[
            (&by_reason(AuthOp::Login), "{{auth_failure_reason}}"),
        ]),
        panel(4, "Rate limiting events", "timeseries", "reqps", &[
            (&format!("sum by (http_route) (rate({}{j}[$__rate_interval]))", prom(Measure::RateLimited)), "{{http_route}}"),
        ]),
        panel(5, "Invalid token attempts", "timeseries", "reqps", &[
            (&format!("sum by (http_route) (rate({}{j}[$__rate_interval]))", prom(Measure::InvalidToken)), "{{http_route}}"),
        ]),
        panel(6, "User lockout events", "timeseries", "short", &[
            (&format!("sum by (job) (increase({}{j}[$__rate_interval]))", prom(Measure::Lockout)), "lockouts {{job}}"),
        ]),
        panel(8, "Geographic distribution of auth attempts (with a GeoIP database)", "table", "short", &[
            (&format!("sum by (geo_country_iso_code, auth_outcome) (increase({}{j}[$__range]))", prom(Measure::GeoAttempts)), "{{geo_country_iso_code}} {{auth_outcome}}"),
        ]),
        panel(7, "Security alerts firing", "table", "short", &[
            (&format!("sum by (alert_name) ({}{{job=~\"$job\", alert_name=~\"AuthBruteForceSuspected|AuthDistributedBruteForce|AuthRateLimit.*|AuthInvalidTokenSpike|AuthLockoutSpike|AuthPasswordSpraying|AuthAccount.*|AuthCredentialStuffing\"}}) > 0", prom(Measure::AlertsFiring)), "{{alert_name}}"),
        ]),
        panel(9, "Failed logins of the top account (account brute force at > 20 in 10 min)", "timeseries", "short", &[
            (&format!("max by (job) ({}{j})", prom(Measure::AttackTopAccountFailures)), "top account {{job}}"),
            (&format!("max by (job) ({}{j})", prom(Measure::AttackAccountsUnderAttack)), "accounts under attack {{job}}"),
        ]),
    ];
    let performance = vec![
        panel(1, "Auth endpoint p95 by route (histogram)", "timeseries", "ms", &[
            (&hist_q(Measure::ResponseTime, "http_route"), "{{http_route}}"),
        ]),
        panel(2, &format!("Auth p95 by operation ({})", alerts_at(rules, &["AuthResponseTimeP95High", "AuthResponseTimeP95Critical"], false, "")), "timeseries", "ms", &[
            (&p(Quantile::P95), "{{auth_operation}}"),
        ]),
        panel(3, &format!("Token validation time ({})", alerts_at(rules, &["AuthTokenValidationDegraded", "AuthTokenValidationSlow"], false, "mean ")), "timeseries", "ms", &[
            (&format!("sum by (job) (rate({tv}_sum{j}[$__rate_interval])) / sum by (job) (rate({tv}_count{j}[$__rate_interval]))"), "mean {{job}}"),
            (&format!("max by (job) ({}{j})", prom(Measure::TokenValidationQuantile(Quantile::P95))), "p95 {{job}}"),
        ]),
        panel(4, "Database query performance (p95 by query)", "timeseries", "ms", &[
            (&hist_q(Measure::DbQueryTime, "db_query_name"), "{{db_query_name}}"),
            (&format!("sum by (db_query_name) (rate({db}_count{j}[$__rate_interval]))"), "rate {{db_query_name}}"),
            (&format!("max by (auth_health_check) ({}{j})", prom(Measure::HealthCheckTime)), "health check {{auth_health_check}}"),
        ]),
        panel(5, "CPU", "timeseries", "percentunit", &[
            (&format!("sum by (job, cpu_mode) (rate({}{j}[$__rate_interval]))", prom(Measure::ProcessCpuTime)), "{{cpu_mode}} {{job}}"),
        ]),
        panel(6, "Memory and open files", "timeseries", "short", &[
            (&format!("max by (job) ({}{j})", prom(Measure::ProcessMemory)), "resident bytes {{job}}"),
            (&format!("max by (job) ({}{j})", prom(Measure::ProcessOpenFiles)), "open fds {{job}}"),
        ]),
        panel(7, "Response time heat (all auth routes)", "timeseries", "ms", &[
            (&format!("histogram_quantile(0.5, sum by (le) (rate({rt}_bucket{j}[$__rate_interval])))"), "p50"),
            (&format!("histogram_quantile(0.99, sum by (le) (rate({rt}_bucket{j}[$__rate_interval])))"), "p99"),
        ]),
    ];
    vec![
        (
            "authwatch-authentication.json".into(),
            dashboard("authwatch-authentication", "Authentication", authentication),
        ),
        (
            "authwatch-security.json".into(),
            dashboard("authwatch-security", "Security", security),
        ),
        (
            "authwatch-performance.json".into(),
            dashboard("authwatch-performance", "Performance", performance),
        ),
    ]
}

/// Every PromQL query of the dashboards, with Grafana's variables left in.
#[must_use]
pub fn dashboard_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (file, d) in grafana_dashboards() {
        for p in d["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((
                        format!("{file}: {}", p["title"].as_str().unwrap_or("")),
                        e.to_owned(),
                    ));
                }
            }
        }
    }
    out
}
