//! Certificates: minting a leaf for a new host (cold) against a cache hit (warm).

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use keyswap::ca::CertificateAuthority;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(
        &dir.path().join("ca.pem"),
        &dir.path().join("ca-key.pem"),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("ca");
    group.bench_function("mint_new_host", |b| {
        b.iter(|| {
            let host = format!("h{}.example.com", next.fetch_add(1, Ordering::Relaxed));
            runtime.block_on(ca.server_config(&host)).unwrap()
        })
    });
    runtime
        .block_on(ca.server_config("api.example.com"))
        .unwrap();
    group.bench_function("cache_hit", |b| {
        b.iter(|| {
            runtime
                .block_on(ca.server_config("api.example.com"))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
