//! The audit-log verifier on any content: never a panic, and its answer is consistent with
//! the input (an `Ok` counts every complete line as a record; an error names a line that
//! exists). The corpus starts from real logs (keyed and not) so mutations stay close to
//! chains that verify.
#![no_main]

use std::path::Path;

use authwatch::audit::verify_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the key: none, the one the keyed seeds were written with, another.
    let Some((&flags, log)) = data.split_first() else {
        return;
    };
    let key: Option<&[u8]> = match flags % 3 {
        0 => None,
        1 => Some(b"fuzz-key"),
        _ => Some(b"other-key"),
    };
    let complete = log.iter().filter(|&&b| b == b'\n').count();
    let torn = !log.is_empty() && log.last() != Some(&b'\n');
    match verify_bytes(Path::new("fuzz"), log, key) {
        Ok(report) => {
            assert_eq!(report.records, complete, "every complete line is a record");
            assert_eq!(report.torn.len(), usize::from(torn));
        }
        Err(e) => {
            assert!(e.line >= 1 && e.line <= complete, "{e}");
            assert_eq!(e.file, Path::new("fuzz"));
        }
    }
});
