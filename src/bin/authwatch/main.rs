//! The `authwatch` command line.
//!
//! ```text
//! authwatch rules [--runbook-base URL]            Prometheus alerting rules (YAML, stdout)
//! authwatch alertmanager                          Alertmanager config (YAML, stdout)
//! authwatch dashboards --out DIR                  Grafana dashboards (3 JSON files)
//! authwatch audit verify PATH [--key-file FILE]   check a local audit log (a file or a folder)
//! authwatch blocks list|add|remove|export …       the block list (see `authwatch --help`)
//! authwatch incident report --audit-dir DIR [--since 24h] [--unmasked]
//!                                                 a Markdown timeline per incident
//! ```
//!
//! The rules, routes and dashboards are those of the default rule set
//! ([`authwatch::alerts::default_rules`]), over the metric catalog's Prometheus names.
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
  authwatch rules [--runbook-base URL]   Prometheus alerting rules for the default alerts
  authwatch alertmanager                 an Alertmanager config routing them (pager, Slack, e-mail)
  authwatch dashboards --out DIR         the Authentication, Security and Performance dashboards
  authwatch audit verify PATH [--key-file FILE]
  PATH       an audit log file or the folder given to AuthWatchBuilder::audit_dir
  --key-file a file holding the audit key, when the log was written with one
             (or set AUTHWATCH_AUDIT_KEY)
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
        ["blocks", rest @ ..] => blocks::run(rest),
        ["incident", "report", rest @ ..] => incident_report(rest),
        ["rules"] => rules(authwatch::alerts::DEFAULT_RUNBOOKS),
        ["rules", "--runbook-base", base] => rules(base),
        ["alertmanager"] => {
            print!(
                "{}",
                generate::alertmanager_yaml(&authwatch::alerts::default_rules())
            );
            ExitCode::SUCCESS
        }
        ["dashboards", "--out", dir] => dashboards(&PathBuf::from(dir)),
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

fn rules(runbook_base: &str) -> ExitCode {
    print!(
        "{}",
        generate::prometheus_rules_yaml(&authwatch::alerts::default_rules(), runbook_base)
    );
    ExitCode::SUCCESS
}

fn dashboards(dir: &std::path::Path) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("authwatch: {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    for (file, d) in generate::grafana_dashboards() {
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
    let key = match rest {
        [] => std::env::var("AUTHWATCH_AUDIT_KEY")
            .ok()
            .map(String::into_bytes),
        ["--key-file", file] => match std::fs::read(file) {
            // A key file written with `echo` ends in a newline that is not part of the key.
            Ok(mut k) => {
                if k.ends_with(b"\n") {
                    k.pop();
                    if k.ends_with(b"\r") {
                        k.pop();
                    }
                }
                Some(k)
            }
            Err(e) => {
                eprintln!("authwatch: {file}: {e}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match authwatch::audit::verify(&path, key.as_deref()) {
        Ok(r) if r.files == 0 => {
            eprintln!("authwatch: no audit files in {}", path.display());
            ExitCode::from(2)
        }
        Ok(r) => {
            println!("ok: {} records in {} files verify", r.records, r.files);
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
