//! The `authwatch` command line.
//!
//! ```text
//! authwatch audit verify PATH [--key-file FILE]   check a local audit log (a file or a folder)
//! ```
//!
//! The audit key can also come from `AUTHWATCH_AUDIT_KEY` (a trailing newline in the key
//! file is ignored). Exit codes: 0 the log verifies (a torn last line from a crash is
//! reported, not an error), 1 a record was tampered with, 2 bad usage, an unreadable path or
//! no audit file in it.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: authwatch audit verify PATH [--key-file FILE]
  PATH       an audit log file or the folder given to AuthWatchBuilder::audit_dir
  --key-file a file holding the audit key, when the log was written with one
             (or set AUTHWATCH_AUDIT_KEY)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["audit", "verify", path, rest @ ..] => verify(PathBuf::from(path), rest),
        ["--help" | "-h" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
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
