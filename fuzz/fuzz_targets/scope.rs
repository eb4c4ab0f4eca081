//! The scope matcher: any `allowed_hosts` entry and any destination host. Invariants: no panic;
//! normalising is idempotent; an exact entry matches its own host; a `*.` entry never matches its
//! apex; a match on the normalised host never depends on letter case or a trailing dot.
#![no_main]

use keyswap::scope::{HostPattern, normalize_host};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (entry, host) = text.split_once('\n').unwrap_or((&text, ""));
    let normalized = normalize_host(host);
    assert_eq!(
        normalize_host(&normalized),
        normalized,
        "normalising twice changes {host:?}"
    );
    let Ok(pattern) = HostPattern::parse(entry) else {
        return;
    };
    let matched = pattern.matches(&normalized);
    for spelling in [host.to_ascii_uppercase(), format!("{host}.")] {
        if !host.ends_with('.') {
            assert_eq!(
                pattern.matches(&normalize_host(&spelling)),
                matched,
                "{entry:?} vs {spelling:?}"
            );
        }
    }
    match &pattern {
        HostPattern::Exact(h) => assert!(pattern.matches(h), "{entry:?} does not match itself"),
        HostPattern::Subdomains(suffix) => {
            let apex = &suffix[1..];
            assert!(!pattern.matches(apex), "{entry:?} matches its apex");
            assert!(
                pattern.matches(&format!("a{suffix}")),
                "{entry:?} misses a subdomain"
            );
        }
    }
});
