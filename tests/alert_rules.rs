//! The generated configuration against the real tools: `promtool check rules` and `promtool test
//! rules` (a case that fires each alert and a near miss that does not), `amtool check-config` and
//! `amtool config routes test` (each alert reaches the receivers of the spec's table), the
//! dashboards' metric names, and the CLI printing the same files. Needs `scripts/test-deps.sh`.

mod real;

use std::collections::BTreeSet;
use std::process::Command;

use authwatch::alerts::generate::{self, PromRule};
use authwatch::alerts::{default_rules, Channel, DEFAULT_RUNBOOKS, SPEC_ALERTS};
use authwatch::metrics::InstrumentKind;
use authwatch::CATALOG;
use real::*;

fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_authwatch"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run(tool: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(dep(tool)).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// One promtool case: input series for a firing case and a near miss, the evaluation time, and
/// the labels the firing alert carries besides the rule's own.
struct Case {
    alert: &'static str,
    interval: &'static str,
    fire: &'static [(&'static str, &'static str)],
    miss: &'static [(&'static str, &'static str)],
    eval: &'static str,
    labels: &'static [(&'static str, &'static str)],
}

const LOGIN_F: &str =
    r#"auth_login_failure_count_total{job="auth",auth_failure_reason="invalid_credentials"}"#;
const LOGIN_S: &str = r#"auth_login_success_count_total{job="auth"}"#;
const REG_F: &str = r#"auth_registration_failure_count_total{job="auth"}"#;
const REG_S: &str = r#"auth_registration_success_count_total{job="auth"}"#;
const TV_F: &str = r#"auth_token_validation_failure_count_total{job="auth"}"#;
const TV_S: &str = r#"auth_token_validation_success_count_total{job="auth"}"#;
const P95: &str = r#"auth_response_time_p95_ms{job="auth",auth_operation="login"}"#;
const RT_COUNT: &str =
    r#"auth_response_time_ms_count{job="auth",auth_operation="login",http_route="/login"}"#;
const TVT_SUM: &str = r#"auth_token_validation_time_ms_sum{job="auth"}"#;
const TVT_COUNT: &str = r#"auth_token_validation_time_ms_count{job="auth"}"#;
const RL: &str = r#"auth_rate_limit_exceeded_count_total{job="auth",http_route="/login"}"#;
const IT: &str = r#"auth_invalid_token_attempts_count_total{job="auth"}"#;
const LOCK: &str = r#"auth_lockout_count_total{job="auth"}"#;

const TOP_ACCOUNT: &str = r#"auth_attack_top_account_failures{job="auth"}"#;

const CASES: &[Case] = &[
    Case {
        alert: "AuthAccountBruteForce",
        interval: "1m",
        fire: &[(TOP_ACCOUNT, "0 5 21x10")],
        miss: &[(TOP_ACCOUNT, "0 5 20x10")],
        eval: "5m",
        labels: &[],
    },
    Case {
        alert: "AuthServiceDown",
        interval: "10s",
        fire: &[(
            r#"auth_health_status{job="auth",auth_health_check="overall"}"#,
            "1x3 0x10",
        )],
        miss: &[(
            r#"auth_health_status{job="auth",auth_health_check="overall"}"#,
            "1x3 0 0 1x10",
        )],
        eval: "60s",
        labels: &[],
    },
    Case {
        alert: "AuthLoginFailureRateHigh",
        interval: "1m",
        fire: &[(LOGIN_F, "0+6x20"), (LOGIN_S, "0+19x20")],
        miss: &[(LOGIN_F, "0+4x20"), (LOGIN_S, "0+16x20")],
        eval: "10m",
        labels: &[],
    },
    Case {
        alert: "AuthLoginFailureRateElevated",
        interval: "1m",
        fire: &[(LOGIN_F, "0+3x20"), (LOGIN_S, "0+17x20")],
        miss: &[(LOGIN_F, "0+2x20"), (LOGIN_S, "0+18x20")],
        eval: "10m",
        labels: &[],
    },
    Case {
        alert: "AuthRegistrationFailureRateHigh",
        interval: "1m",
        fire: &[(REG_F, "0+3x20"), (REG_S, "0+17x20")],
        miss: &[(REG_F, "0+2x20"), (REG_S, "0+18x20")],
        eval: "10m",
        labels: &[],
    },
    Case {
        alert: "AuthTokenValidationFailureRateHigh",
        interval: "1m",
        // Every validation failing, no success series at all: still a ratio of 1.
        fire: &[(TV_F, "0+20x20")],
        miss: &[(TV_F, "0+1x20"), (TV_S, "0+19x20")],
        eval: "10m",
        labels: &[],
    },
    Case {
        alert: "AuthResponseTimeP95Critical",
        interval: "1m",
        fire: &[(P95, "1100x20"), (RT_COUNT, "0+10x20")],
        miss: &[(P95, "1000x20"), (RT_COUNT, "0+10x20")],
        eval: "10m",
        labels: &[("auth_operation", "login")],
    },
    Case {
        alert: "AuthResponseTimeP95High",
        interval: "1m",
        fire: &[(P95, "600x20"), (RT_COUNT, "0+10x20")],
        // Slow, but 5 requests in 5 minutes is under the minimum of 10.
        miss: &[(P95, "600x20"), (RT_COUNT, "0+1x20")],
        eval: "10m",
        labels: &[("auth_operation", "login")],
    },
    Case {
        alert: "AuthTokenValidationSlow",
        interval: "1m",
        fire: &[(TVT_SUM, "0+1300x20"), (TVT_COUNT, "0+10x20")],
        miss: &[(TVT_SUM, "0+1000x20"), (TVT_COUNT, "0+10x20")],
        eval: "10m",
        labels: &[],
    },
    Case {
        alert: "AuthTokenValidationDegraded",
        interval: "1m",
        fire: &[(TVT_SUM, "0+600x20"), (TVT_COUNT, "0+10x20")],
        miss: &[(TVT_SUM, "0+500x20"), (TVT_COUNT, "0+10x20")],
        eval: "10m",
        labels: &[],
    },
    Case {
        alert: "AuthBruteForceSuspected",
        interval: "1m",
        fire: &[(r#"auth_attack_top_ip_failures{job="auth"}"#, "51x20")],
        miss: &[(r#"auth_attack_top_ip_failures{job="auth"}"#, "50x20")],
        eval: "10m",
        labels: &[],
    },
    Case {
        alert: "AuthRateLimitEvents",
        interval: "1m",
        fire: &[(RL, "0+11x20")],
        miss: &[(RL, "0+10x20")],
        eval: "10m",
        labels: &[],
    },
    Case {
        alert: "AuthRateLimitUnderAttack",
        interval: "1m",
        fire: &[(RL, "0+101x20")],
        miss: &[(RL, "0+100x20")],
        eval: "10m",
        labels: &[],
    },
    Case {
        alert: "AuthInvalidTokenSpike",
        interval: "1m",
        // 1 a minute for an hour (5 per 5 minutes), then 20 a minute: 100 ≥ 3 × 5.
        fire: &[(IT, "0+1x65 85+20x9")],
        // 10 a minute (50 per 5 minutes), then 20 a minute: 100 < 3 × 50.
        miss: &[(IT, "0+10x65 670+20x9")],
        eval: "70m",
        labels: &[],
    },
    Case {
        alert: "AuthRegistrationSpike",
        interval: "1m",
        // 1 a minute (10 per 10 minutes), then 20 a minute: 200 ≥ 5 × 10. No failure series.
        fire: &[(REG_S, "0+1x70 90+20x9")],
        // 5 a minute (50 per 10 minutes): 200 < 5 × 50.
        miss: &[(REG_S, "0+5x70 370+20x9")],
        eval: "80m",
        labels: &[],
    },
    Case {
        alert: "AuthDistributedBruteForce",
        interval: "1m",
        fire: &[(
            r#"auth_attack_failing_ips{job="auth",http_route="/login"}"#,
            "50x20",
        )],
        miss: &[(
            r#"auth_attack_failing_ips{job="auth",http_route="/login"}"#,
            "49x20",
        )],
        eval: "10m",
        labels: &[("http_route", "/login")],
    },
    Case {
        alert: "AuthLockoutSpike",
        interval: "1m",
        // None for 70 minutes, then 2 a minute: 20 in 10 minutes against a baseline of 0.
        fire: &[(LOCK, "0x70 2+2x9")],
        // 1 a minute (10 per 10 minutes), then 2 a minute: 20 < 3 × 10.
        miss: &[(LOCK, "0+1x70 72+2x9")],
        eval: "80m",
        labels: &[],
    },
];

fn yaml(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn test_file(case: &Case, rule: &PromRule) -> String {
    let series = |s: &[(&str, &str)]| {
        s.iter()
            .map(|(name, values)| {
                format!(
                    "      - series: {}\n        values: {}\n",
                    yaml(name),
                    yaml(values)
                )
            })
            .collect::<String>()
    };
    let mut labels: Vec<(String, String)> = rule.labels.clone();
    labels.push(("job".into(), "auth".into()));
    for (k, v) in case.labels {
        labels.push(((*k).into(), (*v).into()));
    }
    let map = |kv: &[(String, String)]| {
        kv.iter()
            .map(|(k, v)| format!("{k}: {}", yaml(v)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let annotations: Vec<(String, String)> = rule
        .annotations
        .iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            for (lk, lv) in case.labels {
                v = v.replace(&format!("{{{{ $labels.{lk} }}}}"), lv);
            }
            (k.clone(), v)
        })
        .collect();
    let test = |series_text: String, exp: String| {
        format!(
            "  - interval: {}\n    input_series:\n{series_text}    alert_rule_test:\n      - eval_time: {}\n        alertname: {}\n        exp_alerts:{exp}\n",
            case.interval, case.eval, case.alert
        )
    };
    format!(
        "rule_files: [rules.yml]\nevaluation_interval: {}\ntests:\n{}{}",
        case.interval,
        test(
            series(case.fire),
            format!(
                "\n          - exp_labels: {{{}}}\n            exp_annotations: {{{}}}",
                map(&labels),
                map(&annotations)
            )
        ),
        test(series(case.miss), " []".into()),
    )
}

#[test]
fn generated_rules_pass_promtool_with_a_firing_case_and_a_near_miss_per_alert() {
    let dir = tempdir::Dir::new("rules");
    let rules_yaml = cli(&["rules"]);
    assert_eq!(
        rules_yaml,
        generate::prometheus_rules_yaml(&default_rules(), DEFAULT_RUNBOOKS)
    );
    let rules_path = dir.path().join("rules.yml");
    std::fs::write(&rules_path, &rules_yaml).unwrap();
    let (ok, out) = run(
        "promtool",
        &["check", "rules", rules_path.to_str().unwrap()],
    );
    assert!(ok && out.contains("SUCCESS: 17 rules found"), "{out}");

    let rules = generate::prometheus_rules(&default_rules(), DEFAULT_RUNBOOKS);
    let tested: BTreeSet<&str> = CASES.iter().map(|c| c.alert).collect();
    let all: BTreeSet<&str> = rules.iter().map(|r| r.alert.as_str()).collect();
    assert_eq!(tested, all, "one case per generated alert");
    for name in SPEC_ALERTS {
        assert!(all.contains(name), "{name}");
    }
    let mut failures = Vec::new();
    for case in CASES {
        let rule = rules.iter().find(|r| r.alert == case.alert).unwrap();
        let file = dir.path().join(format!("{}_test.yml", case.alert));
        std::fs::write(&file, test_file(case, rule)).unwrap();
        let (ok, out) = run("promtool", &["test", "rules", file.to_str().unwrap()]);
        if !ok || !out.contains("SUCCESS") {
            failures.push(format!("{}:\n{out}", case.alert));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_wrong_expectation_fails_promtool() {
    // The harness can fail: the firing series with the near miss's expectation.
    let dir = tempdir::Dir::new("rules-wrong");
    std::fs::write(dir.path().join("rules.yml"), cli(&["rules"])).unwrap();
    let rules = generate::prometheus_rules(&default_rules(), DEFAULT_RUNBOOKS);
    let case = &CASES[1];
    let rule = rules.iter().find(|r| r.alert == case.alert).unwrap();
    let swapped = Case {
        fire: case.miss,
        miss: case.fire,
        ..*case
    };
    let file = dir.path().join("wrong_test.yml");
    std::fs::write(&file, test_file(&swapped, rule)).unwrap();
    let (ok, out) = run("promtool", &["test", "rules", file.to_str().unwrap()]);
    assert!(!ok && out.contains("FAILED"), "{out}");
}

#[test]
fn alertmanager_config_passes_amtool_and_routes_as_the_table_says() {
    let dir = tempdir::Dir::new("am-config");
    let path = dir.path().join("alertmanager.yml");
    std::fs::write(&path, cli(&["alertmanager"])).unwrap();
    let p = path.to_str().unwrap();
    let (ok, out) = run("amtool", &["check-config", p]);
    assert!(
        ok && out.contains("SUCCESS") && out.contains("4 receivers"),
        "{out}"
    );
    for rule in default_rules() {
        let mut want: Vec<&str> = rule
            .channels
            .iter()
            .map(|c| match c {
                Channel::Page => "pager",
                Channel::Slack => "slack",
                Channel::Email => "email",
                Channel::Security => "security",
                _ => unreachable!(),
            })
            .collect();
        want.sort_unstable();
        let (ok, out) = run(
            "amtool",
            &[
                "config",
                "routes",
                "test",
                "--config.file",
                p,
                &format!("alertname={}", rule.name),
                &format!("severity={}", rule.severity),
            ],
        );
        assert!(ok, "{out}");
        let line = out
            .lines()
            .find(|l| !l.starts_with("Warning"))
            .unwrap_or("");
        let mut got: Vec<&str> = line.trim().split(',').collect();
        got.sort_unstable();
        assert_eq!(got, want, "{}", rule.name);
    }
}

/// Every metric a dashboard query names is in the catalog (a histogram's `_bucket`, `_sum` and
/// `_count` included).
#[test]
fn dashboards_name_only_catalog_metrics() {
    let dir = tempdir::Dir::new("dashboards");
    let out = cli(&["dashboards", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let mut known = BTreeSet::new();
    for d in CATALOG.iter() {
        let p = d.prometheus_name();
        if d.kind == InstrumentKind::Histogram {
            for s in ["_bucket", "_sum", "_count"] {
                known.insert(format!("{p}{s}"));
            }
        } else {
            known.insert(p);
        }
    }
    let mut titles = BTreeSet::new();
    for (file, d) in generate::grafana_dashboards() {
        let on_disk: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(&file)).unwrap())
                .unwrap();
        assert_eq!(on_disk, d);
        titles.insert(d["title"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        titles,
        ["Authentication", "Performance", "Security"]
            .map(String::from)
            .into()
    );
    let queries = generate::dashboard_queries();
    assert!(queries.len() >= 25, "{}", queries.len());
    for (panel, q) in &queries {
        let names: Vec<&str> = q
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("auth_") || w.starts_with("process_"))
            .filter(|w| {
                ![
                    "auth_operation",
                    "auth_failure_reason",
                    "auth_health_check",
                    "auth_outcome",
                ]
                .contains(w)
            })
            .collect();
        assert!(!names.is_empty(), "{panel}: {q}");
        for n in names {
            assert!(known.contains(n), "{panel}: {n} is not a catalog metric");
        }
    }
}
