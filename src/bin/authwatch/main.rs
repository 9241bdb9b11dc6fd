//! The `authwatch` command line.
//!
//! ```text
//! authwatch rules [--config FILE] [--runbook-base URL]   Prometheus alerting rules (YAML)
//! authwatch alertmanager [--config FILE]          Alertmanager config (YAML, stdout)
//! authwatch dashboards --out DIR [--config FILE]  Grafana dashboards (3 JSON files)
//! authwatch review --prometheus URL [--since 7d] [--config FILE] --out DIR [--allow-looser]
//!                                                 the weekly review (review.md, .html, suggested.toml)
//! authwatch config check FILE                     check an authwatch.toml
//! authwatch config print [--config FILE]          the effective configuration, every default
//! authwatch audit verify PATH [--key-file FILE] [--checkpoints FILE] [--identity FILE]
//!                                                 check a local audit log (a file or a folder)
//! authwatch audit cat PATH [--class security]      print the records (JSON lines)
//! authwatch audit access --audit-dir DIR [--since 30d]
//!                                                 who read the monitoring endpoints
//! authwatch blocks list|add|remove|export …       the block list (see `authwatch --help`)
//! authwatch incident report --audit-dir DIR [--since 24h] [--unmasked]
//!                                                 a Markdown timeline per incident
//! ```
//!
//! The rules, routes and dashboards are those of the default rule set
//! ([`authwatch::alerts::default_rules`]) with the settings of `--config FILE` (or the file
//! `AUTHWATCH_CONFIG` names), over the metric catalog's Prometheus names: the same file the
//! service reads, so the two alert paths agree.
//!
//! The audit key can also come from `AUTHWATCH_AUDIT_KEY` (a trailing newline in the key
//! file is ignored). Exit codes: 0 the log verifies (a torn last line from a crash is
//! reported, not an error), 1 a record was tampered with, 2 bad usage, an unreadable path or
//! no audit file in it.

mod blocks;

use std::path::PathBuf;

use authwatch::alerts::generate;
use std::process::ExitCode;

const USAGE: &str = "usage:
  authwatch rules [--config FILE] [--runbook-base URL]
             Prometheus alerting rules (the defaults, with the file's settings)
  authwatch alertmanager [--config FILE] an Alertmanager config routing them (pager, Slack, e-mail)
  authwatch dashboards --out DIR [--config FILE]
             the Authentication, Security and Performance dashboards
  authwatch review --prometheus URL [--since 7d] [--config FILE] --out DIR [--allow-looser]
             the weekly review from Prometheus' history: review.md, review.html (charts,
             no network) and suggested.toml (thresholds from the observed distribution)
  authwatch config check FILE            check an authwatch.toml (exit 1: it is wrong)
  authwatch config print [--config FILE] the effective configuration, with every default
  authwatch audit verify PATH [--key-file FILE] [--checkpoints FILE] [--identity FILE]
  PATH       an audit log file or the folder given to AuthWatchBuilder::audit_dir
  --key-file a file holding the audit key, when the log was written with one
             (or set AUTHWATCH_AUDIT_KEY)
  --identity an age identity file (AGE-SECRET-KEY-1…) that opens an encrypted log's records
  --checkpoints  an external copy of the checkpoints (the auth.audit.checkpoint records
             exported from the collector's log store, one per line): a log shorter than them
             is reported with the number of records missing
  authwatch audit cat PATH [--class authentication|security] [--identity FILE]
             print the records of a log file or folder, oldest first (JSON lines);
             an encrypted log's records with the age identity that opens them
  authwatch audit access --audit-dir DIR [--since 30d]
             who read /metrics, /auth/stats, /auth/dashboard, /auth/health and
             /auth/blocks: per endpoint, client and token fingerprint, the requests let in
             and refused (the monthly access audit)
  authwatch incident report --audit-dir DIR [--since 24h] [--unmasked]
             each incident of the audit log (alert, times, peak, addresses, blocks,
             notifications) as Markdown; addresses masked unless --unmasked
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["audit", "verify", path, rest @ ..] => verify(PathBuf::from(path), rest),
        ["audit", "access", rest @ ..] => audit_access(rest),
        ["audit", "cat", path, rest @ ..] => audit_cat(&PathBuf::from(path), rest),
        ["blocks", rest @ ..] => blocks::run(rest),
        ["incident", "report", rest @ ..] => incident_report(rest),
        ["config", "check", file] => config_check(file),
        ["review", rest @ ..] => review(rest),
        ["config", "print", rest @ ..] => with_config(rest, &[], |l, _| {
            print!(
                "{}",
                l.map_or_else(authwatch::config::defaults, |l| l.effective())
                    .to_toml()
            );
            ExitCode::SUCCESS
        }),
        ["rules", rest @ ..] => with_config(rest, &["--runbook-base"], |l, opts| {
            let base = opts
                .first()
                .cloned()
                .flatten()
                .or_else(|| l.and_then(|l| l.file.alerts.runbook_base.clone()))
                .unwrap_or_else(|| authwatch::alerts::DEFAULT_RUNBOOKS.to_owned());
            match rule_set(l) {
                Ok(r) => {
                    print!("{}", generate::prometheus_rules_yaml(&r, &base));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }),
        ["alertmanager", rest @ ..] => with_config(rest, &[], |l, _| match rule_set(l) {
            Ok(r) => {
                print!("{}", generate::alertmanager_yaml(&r));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        }),
        ["dashboards", rest @ ..] => with_config(rest, &["--out"], |l, opts| {
            let Some(Some(dir)) = opts.first().cloned() else {
                eprintln!("authwatch: dashboards needs --out DIR\n{USAGE}");
                return ExitCode::from(2);
            };
            match rule_set(l) {
                Ok(r) => dashboards(&PathBuf::from(dir), &r),
                Err(e) => fail(&e),
            }
        }),
        ["--help" | "-h" | "help"] => {
            println!("{USAGE}{}", blocks::USAGE);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}{}", blocks::USAGE);
            ExitCode::from(2)
        }
    }
}

/// The age identities in `file`, or the exit code after saying why not.
fn identities_in(file: &str) -> Result<authwatch::audit::Identities, ExitCode> {
    authwatch::audit::Identities::from_file(std::path::Path::new(file)).map_err(|e| {
        eprintln!("authwatch: {file}: {e}");
        ExitCode::from(2)
    })
}

/// The notice `audit cat` prints first (on stderr): reading security records is itself an
/// event to audit.
const CAT_NOTICE: &str = "authwatch: access to security audit records should itself be audited (the spec: \"access audited\"); see docs/runbooks.md, \"The audit log: integrity, and access to it\", for OS-level auditing of the audit folder (auditd)";

fn audit_cat(path: &std::path::Path, args: &[&str]) -> ExitCode {
    let (mut class, mut identities) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (*a, it.next().copied()) {
            ("--class", Some(c @ ("authentication" | "security"))) => class = Some(c),
            ("--identity", Some(f)) => match identities_in(f) {
                Ok(i) => identities = Some(i),
                Err(code) => return code,
            },
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    eprintln!("{CAT_NOTICE}");
    let mut files: Vec<PathBuf> = if path.is_dir() {
        match std::fs::read_dir(path) {
            Ok(d) => d
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.ends_with(".jsonl")
                            && class.is_none_or(|c| n.starts_with(&format!("{c}-")))
                    })
                })
                .collect(),
            Err(e) => {
                eprintln!("authwatch: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    } else {
        vec![path.to_owned()]
    };
    // Oldest first: by day, then class.
    files.sort_by_key(|p| {
        let n = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned();
        // `<class>-YYYY-MM-DD.jsonl`: the date is the last 16 characters.
        (
            n.get(n.len().saturating_sub(16)..).unwrap_or("").to_owned(),
            n,
        )
    });
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let mut sealed = 0u64;
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(t) => {
                for line in t.lines() {
                    let shown = match (&identities, line.contains("\"age\":\"")) {
                        (Some(ids), true) => match ids.decrypt(line) {
                            Some(Ok(v)) => v.to_string(),
                            Some(Err(e)) => {
                                eprintln!(
                                    "authwatch: {}: cannot decrypt a record: {e}",
                                    f.display()
                                );
                                return ExitCode::from(1);
                            }
                            None => line.to_owned(),
                        },
                        (None, true) => {
                            sealed += 1;
                            line.to_owned()
                        }
                        _ => line.to_owned(),
                    };
                    if writeln!(out, "{shown}").is_err() {
                        return ExitCode::SUCCESS; // a closed pipe (`| head`)
                    }
                }
            }
            Err(e) => {
                eprintln!("authwatch: {}: {e}", f.display());
                return ExitCode::from(2);
            }
        }
    }
    if sealed > 0 {
        eprintln!("authwatch: {sealed} records are encrypted: give --identity FILE to read them");
    }
    ExitCode::SUCCESS
}

fn audit_access(args: &[&str]) -> ExitCode {
    let (mut dir, mut since) = (None, std::time::Duration::from_secs(30 * 24 * 3600));
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (*a, it.next()) {
            ("--audit-dir", Some(d)) => dir = Some(PathBuf::from(d)),
            ("--since", Some(s)) => match humantime::parse_duration(s) {
                Ok(d) => since = d,
                Err(e) => {
                    eprintln!("authwatch: --since {s}: {e}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("authwatch: --audit-dir is needed\n{USAGE}");
        return ExitCode::from(2);
    };
    let lines = match authwatch::access::summary(&dir, since) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("authwatch: {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    println!(
        "# Access to the monitoring endpoints, the last {}\n",
        humantime::format_duration(since)
    );
    if lines.is_empty() {
        println!("No access recorded.");
        return ExitCode::SUCCESS;
    }
    println!("| endpoint | client | token | let in | requests | hours | first | last |");
    println!("|---|---|---|---|---:|---:|---|---|");
    for l in &lines {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            l.endpoint,
            l.client.as_deref().unwrap_or("(other)"),
            l.token.as_deref().unwrap_or("none"),
            if l.allowed { "yes" } else { "**refused**" },
            l.requests,
            l.hours,
            l.first,
            l.last
        );
    }
    let refused: u64 = lines
        .iter()
        .filter(|l| !l.allowed)
        .map(|l| l.requests)
        .sum();
    println!(
        "\n{} requests, {refused} refused. Access to these records should itself be audited: see the runbooks' section on the audit log.",
        lines.iter().map(|l| l.requests).sum::<u64>()
    );
    ExitCode::SUCCESS
}

fn incident_report(args: &[&str]) -> ExitCode {
    let mut dir = None;
    let mut since = std::time::Duration::from_secs(24 * 3600);
    let mut how = authwatch::incidents::Addresses::Masked;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (*a, it.clone().next()) {
            ("--audit-dir", Some(d)) => {
                dir = Some(PathBuf::from(d));
                it.next();
            }
            ("--since", Some(s)) => match humantime::parse_duration(s) {
                Ok(d) => {
                    since = d;
                    it.next();
                }
                Err(e) => {
                    eprintln!("authwatch: --since {s}: {e}");
                    return ExitCode::from(2);
                }
            },
            ("--unmasked", _) => how = authwatch::incidents::Addresses::Unmasked,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("authwatch: --audit-dir is needed\n{USAGE}");
        return ExitCode::from(2);
    };
    match authwatch::incidents::report(&dir, since, how) {
        Ok(md) => {
            print!("{md}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authwatch: {}: {e}", dir.display());
            ExitCode::from(2)
        }
    }
}

/// Runs `f` with the configuration of `--config FILE` (else the file `AUTHWATCH_CONFIG`
/// names, else none) and the values of the `options` given (in their order).
fn with_config(
    args: &[&str],
    options: &[&str],
    f: impl FnOnce(Option<&authwatch::config::Loaded>, &[Option<String>]) -> ExitCode,
) -> ExitCode {
    let mut file: Option<String> = None;
    let mut values: Vec<Option<String>> = vec![None; options.len()];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(v) = it.next() else {
            eprintln!("authwatch: {a} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        if *a == "--config" {
            file = Some((*v).to_owned());
        } else if let Some(i) = options.iter().position(|o| o == a) {
            values[i] = Some((*v).to_owned());
        } else {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    let file = file.or_else(|| {
        std::env::var(authwatch::config::CONFIG_ENV)
            .ok()
            .filter(|s| !s.is_empty())
    });
    match file.map(authwatch::config::Loaded::read).transpose() {
        Ok(l) => f(l.as_ref(), &values),
        Err(e) => fail(&e),
    }
}

fn fail(e: &authwatch::config::ConfigError) -> ExitCode {
    eprintln!("authwatch: {e}");
    ExitCode::from(1)
}

/// The rules: the defaults with the file's settings.
fn rule_set(
    l: Option<&authwatch::config::Loaded>,
) -> Result<Vec<authwatch::alerts::Rule>, authwatch::config::ConfigError> {
    let cfg = match l {
        Some(l) => l.alerts(authwatch::AlertConfig::new())?,
        None => authwatch::AlertConfig::new(),
    };
    Ok(cfg.rule_set().to_vec())
}

fn review(args: &[&str]) -> ExitCode {
    let looser = args.contains(&"--allow-looser");
    let args: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| *a != "--allow-looser")
        .collect();
    with_config(&args, &["--prometheus", "--since", "--out"], |l, opts| {
        let (Some(url), Some(out)) = (opts[0].clone(), opts[2].clone()) else {
            eprintln!("authwatch: review needs --prometheus URL and --out DIR\n{USAGE}");
            return ExitCode::from(2);
        };
        let since = match opts[1].as_deref().map(humantime::parse_duration) {
            None => std::time::Duration::from_secs(7 * 24 * 3600),
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                eprintln!("authwatch: --since: {e}");
                return ExitCode::from(2);
            }
        };
        let rules = match rule_set(l) {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
        let settings = authwatch::review::ReviewSettings {
            prometheus: url,
            since,
            until: std::time::SystemTime::now(),
            rules,
            allow_looser: looser,
        };
        let r = match authwatch::review::run(&settings) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("authwatch: review: {e}");
                return ExitCode::from(1);
            }
        };
        let dir = PathBuf::from(out);
        let files = [
            ("review.md", r.markdown()),
            ("review.html", r.html()),
            ("suggested.toml", r.suggested_toml()),
        ];
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("authwatch: {}: {e}", dir.display());
            return ExitCode::from(2);
        }
        for (name, text) in files {
            let p = dir.join(name);
            if let Err(e) = std::fs::write(&p, text) {
                eprintln!("authwatch: {}: {e}", p.display());
                return ExitCode::from(2);
            }
            println!("{}", p.display());
        }
        ExitCode::SUCCESS
    })
}

fn config_check(file: &str) -> ExitCode {
    match authwatch::config::Loaded::read(file) {
        Ok(l) => {
            let rules = rule_set(Some(&l)).unwrap_or_default();
            let defaults = authwatch::alerts::default_rules();
            let changed = rules
                .iter()
                .filter(|r| !defaults.iter().any(|d| d == *r))
                .count();
            let off = rules.iter().filter(|r| !r.enabled).count();
            println!(
                "ok: {file}: {} rules, {changed} set by the file, {off} off",
                rules.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn dashboards(dir: &std::path::Path, rules: &[authwatch::alerts::Rule]) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("authwatch: {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    for (file, d) in generate::grafana_dashboards_for(rules) {
        let path = dir.join(&file);
        let text = serde_json::to_string_pretty(&d).expect("a dashboard serialises");
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("authwatch: {}: {e}", path.display());
            return ExitCode::from(2);
        }
        println!("{}", path.display());
    }
    ExitCode::SUCCESS
}

fn verify(path: PathBuf, rest: &[&str]) -> ExitCode {
    let mut key = std::env::var("AUTHWATCH_AUDIT_KEY")
        .ok()
        .map(String::into_bytes);
    let mut checkpoints: Option<PathBuf> = None;
    let mut identities: Option<authwatch::audit::Identities> = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match (*a, it.next()) {
            ("--key-file", Some(file)) => match std::fs::read(file) {
                // A key file written with `echo` ends in a newline that is not part of the key.
                Ok(mut k) => {
                    if k.ends_with(b"\n") {
                        k.pop();
                        if k.ends_with(b"\r") {
                            k.pop();
                        }
                    }
                    key = Some(k);
                }
                Err(e) => {
                    eprintln!("authwatch: {file}: {e}");
                    return ExitCode::from(2);
                }
            },
            ("--checkpoints", Some(file)) => checkpoints = Some(PathBuf::from(file)),
            ("--identity", Some(file)) => match identities_in(file) {
                Ok(i) => identities = Some(i),
                Err(code) => return code,
            },
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let result = match (&checkpoints, &identities) {
        (Some(c), _) => authwatch::audit::verify_with_checkpoints(&path, key.as_deref(), c),
        (None, Some(ids)) => authwatch::audit::verify_decrypting(&path, key.as_deref(), ids),
        (None, None) => authwatch::audit::verify(&path, key.as_deref()),
    };
    let result = match (result, &identities, &checkpoints) {
        // Both: the checkpoints' report, and every record opened.
        (Ok(mut r), Some(ids), Some(_)) => {
            authwatch::audit::verify_decrypting(&path, key.as_deref(), ids).map(|d| {
                r.decrypted = d.decrypted;
                r
            })
        }
        (other, ..) => other,
    };
    match result {
        Ok(r) if r.files == 0 => {
            eprintln!("authwatch: no audit files in {}", path.display());
            ExitCode::from(2)
        }
        Ok(r) => {
            println!(
                "ok: {} records in {} files verify{}{}",
                r.records,
                r.files,
                if r.checkpoints > 0 {
                    format!(", none missing against {} checkpoints", r.checkpoints)
                } else {
                    String::new()
                },
                if r.decrypted > 0 {
                    format!(", {} encrypted records read", r.decrypted)
                } else {
                    String::new()
                }
            );
            for t in &r.torn {
                println!(
                    "note: {} ends in a torn record (a crash mid-write); the records before it verify",
                    t.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) if e.kind == authwatch::audit::Tamper::Unreadable => {
            eprintln!("authwatch: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            println!("TAMPERED: {e}");
            ExitCode::from(1)
        }
    }
}
