//! Streamed body substitution throughput, for 1 KiB, 64 KiB and 16 MiB bodies fed in 16 KiB chunks,
//! with and without a placeholder in them.

use std::hint::black_box;
use std::path::Path;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyswap::config::Config;
use keyswap::store::Store;
use keyswap::substitute::stream::StreamReplacer;

const CHUNK: usize = 16 * 1024;

fn store() -> Store {
    let mut text = String::new();
    for i in 0..20 {
        text.push_str(&format!(
            "[[vaults]]\nid = \"vlt_{i}\"\n[[vaults.credentials]]\nid = \"vcrd_{i}\"\nauth = {{ type = \"environment_variable\", secret_name = \"T{i}\", secret_value = \"secret-value-{i}\", networking = {{ type = \"unrestricted\" }}, injection_location = {{ body = true }} }}\n"
        ));
    }
    Store::build(Config::from_toml(&text, "bench", Path::new("")).unwrap(), 1).unwrap()
}

fn chunks(size: usize, with_placeholder: bool) -> Vec<Bytes> {
    let mut body = vec![b'a'; size];
    if with_placeholder {
        body[size / 2..size / 2 + 11].copy_from_slice(b"ks-ph-vcrd_");
        body[size / 2 + 11] = b'7';
    }
    body.chunks(CHUNK).map(Bytes::copy_from_slice).collect()
}

fn bench(c: &mut Criterion) {
    let store = store();
    let table = store.body_table().unwrap().clone();
    let enabled = vec![true; store.entries().len()];
    for (name, size) in [("1KiB", 1024), ("64KiB", 64 * 1024), ("16MiB", 16 << 20)] {
        let mut group = c.benchmark_group(format!("body/{name}"));
        group.throughput(Throughput::Bytes(size as u64));
        if size > 1 << 20 {
            group.sample_size(10);
        }
        for (label, with) in [("no_placeholder", false), ("one_placeholder", true)] {
            let input = chunks(size, with);
            group.bench_function(label, |b| {
                b.iter(|| {
                    let mut r = StreamReplacer::new(table.clone(), enabled.clone());
                    let mut n = 0;
                    for chunk in &input {
                        n += r.push(chunk.clone()).len();
                    }
                    black_box(n + r.finish().len())
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
