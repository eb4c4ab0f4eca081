//! The config parser on any text: no panic, and every refusal is `file:line:column: message` with
//! a position inside the text.
#![no_main]

use std::path::Path;

use keyswap::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Err(errors) = Config::from_toml(text, "fuzz.toml", Path::new("/nonexistent")) else {
        return;
    };
    let lines = text.lines().count().max(1) + 1;
    for e in &errors.0 {
        assert_eq!(e.file, "fuzz.toml");
        assert!(
            e.line >= 1 && e.line <= lines,
            "line {} of {lines}: {e}",
            e.line
        );
        assert!(e.column >= 1, "{e}");
        assert!(!e.message.is_empty());
    }
});
