//! `authwatch blocks …`: the block list of a running service, through its `/auth/blocks`
//! admin endpoint, or of a fleet, straight from Redis.

use std::process::ExitCode;
use std::time::Duration;

use authwatch::blocks::{export, ExportFormat};
use authwatch::BlockedIp;

pub(crate) const USAGE: &str = "  authwatch blocks list   --url URL [--token-file FILE]
  authwatch blocks add IP [--ttl 1h] [--reason TEXT] --url URL [--token-file FILE]
  authwatch blocks remove IP --url URL [--token-file FILE]
  authwatch blocks export --format nftables|ipset|plain|json
                          (--url URL [--token-file FILE] | --redis URL --service NAME [--namespace NS])
  URL        the service's base URL (its /auth/blocks answers the admin token)
  FILE       a file holding the admin token (or set AUTHWATCH_ADMIN_TOKEN)";

/// The flags after the command words: `--name value` pairs and the positional words.
struct Args<'a> {
    words: Vec<&'a str>,
    flags: Vec<(&'a str, &'a str)>,
}

impl<'a> Args<'a> {
    fn parse(args: &'a [&'a str]) -> Result<Self, String> {
        let mut words = Vec::new();
        let mut flags = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let v = it.next().ok_or(format!("--{name} needs a value"))?;
                flags.push((name, *v));
            } else {
                words.push(*a);
            }
        }
        Ok(Self { words, flags })
    }

    fn flag(&self, name: &str) -> Option<&'a str> {
        self.flags.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

/// The admin endpoint of `--url`, with its token.
struct Endpoint {
    url: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Endpoint {
    fn of(a: &Args<'_>) -> Result<Self, String> {
        let base = a.flag("url").ok_or("--url is needed")?;
        let token = match a.flag("token-file") {
            Some(f) => std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?,
            None => std::env::var("AUTHWATCH_ADMIN_TOKEN")
                .map_err(|_| "--token-file or AUTHWATCH_ADMIN_TOKEN is needed")?,
        };
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            url: format!("{}/auth/blocks", base.trim_end_matches('/')),
            token: token.trim().to_owned(),
            http,
        })
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> Result<String, String> {
        let res = req
            .bearer_auth(&self.token)
            .send()
            .map_err(|e| format!("{}: {e}", self.url))?;
        let status = res.status();
        let text = res.text().map_err(|e| e.to_string())?;
        if !status.is_success() {
            let msg = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return Err(format!("{}: {status}: {}", self.url, msg.trim()));
        }
        Ok(text)
    }
}

pub(crate) fn run(args: &[&str]) -> ExitCode {
    let a = match Args::parse(args) {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    let done = match a.words.as_slice() {
        ["list"] => list(&a),
        ["add", ip] => add(&a, ip),
        ["remove", ip] => remove(&a, ip),
        ["export"] => export_blocks(&a),
        _ => return usage("which blocks command?"),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authwatch: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("authwatch: {why}\nusage:\n{USAGE}");
    ExitCode::from(2)
}

fn list(a: &Args<'_>) -> Result<(), String> {
    let e = Endpoint::of(a)?;
    let text = e.send(e.http.get(&e.url))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let blocks = v["blocks"].as_array().cloned().unwrap_or_default();
    if v["dry_run"] == true {
        println!("(dry run: these are recorded, not enforced)");
    }
    if blocks.is_empty() {
        println!("no address is blocked");
    }
    for b in blocks {
        println!(
            "{:<28} {:>8}s left  {:<8} {:>6} refused  {}",
            b["cidr"].as_str().unwrap_or("?"),
            b["remaining_seconds"],
            b["source"].as_str().unwrap_or("?"),
            b["refused"],
            b["reason"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn add(a: &Args<'_>, ip: &str) -> Result<(), String> {
    let ip: std::net::IpAddr = ip.parse().map_err(|e| format!("{ip}: {e}"))?;
    let ttl = match a.flag("ttl") {
        Some(t) => humantime::parse_duration(t).map_err(|e| format!("--ttl {t}: {e}"))?,
        None => Duration::from_secs(3600),
    };
    let e = Endpoint::of(a)?;
    let body = serde_json::json!({
        "ip": ip.to_string(),
        "ttl_seconds": ttl.as_secs().max(1),
        "reason": a.flag("reason").unwrap_or("blocked with the authwatch command"),
    });
    let text = e.send(
        e.http
            .post(&e.url)
            .header("content-type", "application/json")
            .body(body.to_string()),
    )?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    println!(
        "blocked {} for {}",
        v["cidr"].as_str().unwrap_or("?"),
        humantime::format_duration(Duration::from_secs(ttl.as_secs().max(1)))
    );
    Ok(())
}

fn remove(a: &Args<'_>, ip: &str) -> Result<(), String> {
    let ip: std::net::IpAddr = ip.parse().map_err(|e| format!("{ip}: {e}"))?;
    let e = Endpoint::of(a)?;
    let text = e.send(e.http.delete(format!("{}?ip={ip}", e.url)))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    println!(
        "unblocked {} ({} requests refused)",
        v["cidr"].as_str().unwrap_or("?"),
        v["refused"]
    );
    Ok(())
}

fn export_blocks(a: &Args<'_>) -> Result<(), String> {
    let format: ExportFormat = a
        .flag("format")
        .ok_or("--format is needed: nftables, ipset, plain or json")?
        .parse()?;
    let blocks: Vec<BlockedIp> = match a.flag("redis") {
        Some(url) => {
            let service = a
                .flag("service")
                .ok_or("--service is needed with --redis")?;
            let mut fleet = authwatch::Fleet::redis(url);
            if let Some(ns) = a.flag("namespace") {
                fleet = fleet.namespace(ns);
            }
            fleet.read_blocks(service)?
        }
        None => {
            // The endpoint renders it: the same function, the service's own clock.
            let e = Endpoint::of(a)?;
            let f = a.flag("format").unwrap_or("json");
            print!("{}", e.send(e.http.get(format!("{}?format={f}", e.url)))?);
            return Ok(());
        }
    };
    print!("{}", export(&blocks, format));
    Ok(())
}
