//! The header hot path on a typical 15-header request: without a placeholder (the common case, no
//! allocation), with one, with five, and with Basic auth.

use std::hint::black_box;
use std::path::Path;

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use keyswap::config::Config;
use keyswap::store::Store;
use keyswap::substitute::{self, Report, Target};

fn store(credentials: usize) -> Store {
    let mut text = String::new();
    for i in 0..credentials {
        text.push_str(&format!(
            "[[vaults]]\nid = \"vlt_{i}\"\n[[vaults.credentials]]\nid = \"vcrd_{i}\"\nauth = {{ type = \"environment_variable\", secret_name = \"T{i}\", secret_value = \"ghp_secret_value_{i}\", networking = {{ type = \"limited\", allowed_hosts = [\"api.github.com\"] }} }}\n"
        ));
    }
    Store::build(Config::from_toml(&text, "bench", Path::new("")).unwrap(), 1).unwrap()
}

fn typical_headers(authorization: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("user-agent", "git/2.47.3"),
        ("accept", "application/vnd.github+json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("x-github-api-version", "2022-11-28"),
        ("x-request-id", "4f1c2a9e-77b1-4c1e-a3c5-1d2e3f405162"),
        ("content-type", "application/json"),
        ("cache-control", "no-cache"),
        ("accept-language", "en-US,en;q=0.9"),
        ("x-forwarded-proto", "https"),
        ("sec-fetch-mode", "cors"),
        ("origin", "https://github.com"),
        ("referer", "https://github.com/keyswap/keyswap/pulls"),
        ("if-none-match", "W/\"5d8f3c0a9b7e4f2a\""),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h.insert(
        "authorization",
        HeaderValue::from_str(authorization).unwrap(),
    );
    h
}

fn bench(c: &mut Criterion) {
    for credentials in [1, 100] {
        let store = store(credentials);
        let target = Target {
            host: "api.github.com",
            port: 443,
            path: "/repos/x/y",
            secrets_allowed: true,
            vaults: store.session(keyswap::session::IMPLICIT).unwrap().vaults(),
        };
        let mut group = c.benchmark_group(format!("headers/{credentials}_credentials"));
        let clean = typical_headers("Bearer ghp_not_a_placeholder_at_all");
        group.bench_function("no_placeholder", |b| {
            let mut h = clean.clone();
            b.iter(|| {
                let mut report = Report::default();
                substitute::headers(store.placeholders(), target, black_box(&mut h), &mut report);
                black_box(report.is_empty())
            })
        });
        let with = typical_headers("Bearer ks-ph-vcrd_0");
        group.bench_function("bearer_placeholder", |b| {
            b.iter_batched_ref(
                || with.clone(),
                |h| {
                    let mut report = Report::default();
                    substitute::headers(store.placeholders(), target, h, &mut report);
                    black_box(report.is_empty())
                },
                criterion::BatchSize::SmallInput,
            )
        });
        let mut five = typical_headers("Bearer ks-ph-vcrd_0");
        for (i, name) in ["x-a", "x-b", "x-c", "x-d"].into_iter().enumerate() {
            five.insert(
                name,
                HeaderValue::from_str(&format!("ks-ph-vcrd_{}", i % credentials)).unwrap(),
            );
        }
        group.bench_function("five_placeholders", |b| {
            b.iter_batched_ref(
                || five.clone(),
                |h| {
                    let mut report = Report::default();
                    substitute::headers(store.placeholders(), target, h, &mut report);
                    black_box(report.is_empty())
                },
                criterion::BatchSize::SmallInput,
            )
        });
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("x-access-token:ks-ph-vcrd_0")
        );
        let with_basic = typical_headers(&basic);
        group.bench_function("basic_auth_placeholder", |b| {
            b.iter_batched_ref(
                || with_basic.clone(),
                |h| {
                    let mut report = Report::default();
                    substitute::headers(store.placeholders(), target, h, &mut report);
                    black_box(report.is_empty())
                },
                criterion::BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
