//! The no-placeholder fast path allocates nothing: headers (Basic auth included) and the query
//! string are scanned in place. Checked with a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Uri};
use keyswap::config::Config;
use keyswap::store::Store;
use keyswap::substitute::{self, Report, Target};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_request_without_placeholders_is_scanned_without_allocating() {
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!(
            "[[vaults]]\nid = \"vlt_{i}\"\n[[vaults.credentials]]\nid = \"vcrd_{i}\"\nauth = {{ type = \"environment_variable\", secret_name = \"T{i}\", secret_value = \"s{i}\", networking = {{ type = \"limited\", allowed_hosts = [\"api{i}.example.com\"] }}, injection_location = {{ query = true }} }}\n"
        ));
    }
    let store = Store::build(Config::from_toml(&text, "t", Path::new("")).unwrap(), 1).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("curl/8.5.0"));
    headers.insert(
        "accept",
        HeaderValue::from_static("application/vnd.github+json"),
    );
    headers.insert(
        "x-request-id",
        HeaderValue::from_static("4f1c2a9e-77b1-4c1e-a3c5-1d2e3f405162"),
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("user:ghp_notaplaceholder")
    );
    headers.insert("authorization", HeaderValue::from_str(&basic).unwrap());
    let uri: Uri = "https://api1.example.com/repos/x/y?per_page=100&page=2"
        .parse()
        .unwrap();
    let target = Target {
        host: "api1.example.com",
        port: 443,
        path: "/repos/x/y",
        secrets_allowed: true,
        vaults: store.session(keyswap::session::IMPLICIT).unwrap().vaults(),
    };

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut report = Report::default();
    for _ in 0..100 {
        substitute::headers(store.placeholders(), target, &mut headers, &mut report);
        assert!(substitute::query(store.placeholders(), target, &uri, &mut report).is_none());
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(report.is_empty());
    assert_eq!(after - before, 0, "the no-placeholder path allocated");

    // And the counter does count: a request with a placeholder allocates its replacement.
    headers.insert("x-token", HeaderValue::from_static("ks-ph-vcrd_1"));
    substitute::headers(store.placeholders(), target, &mut headers, &mut report);
    assert!(ALLOCATIONS.load(Ordering::Relaxed) > after);
    assert_eq!(headers["x-token"], "s1");
}
