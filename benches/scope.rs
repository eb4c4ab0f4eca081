//! Scope lookup: "could any credential of this session apply to this host?" with 1,000 credentials
//! of 16 allowed_hosts each (the `mitm = "auto"` decision made at every CONNECT).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use keyswap::config::Config;
use keyswap::session::IMPLICIT;
use keyswap::store::Store;

fn store() -> Store {
    let mut text = String::new();
    for i in 0..1000 {
        let hosts: Vec<String> = (0..16)
            .map(|j| {
                if j % 2 == 0 {
                    format!("\"api{j}.svc{i}.example.com\"")
                } else {
                    format!("\"*.svc{i}-{j}.example.net\"")
                }
            })
            .collect();
        text.push_str(&format!(
            "[[vaults]]\nid = \"vlt_{i}\"\n[[vaults.credentials]]\nid = \"vcrd_{i}\"\nauth = {{ type = \"environment_variable\", secret_name = \"T{i}\", secret_value = \"s{i}\", networking = {{ type = \"limited\", allowed_hosts = [{}] }} }}\n",
            hosts.join(", ")
        ));
    }
    Store::build(Config::from_toml(&text, "bench", Path::new("")).unwrap(), 1).unwrap()
}

fn bench(c: &mut Criterion) {
    let store = store();
    let session = store.session(IMPLICIT).unwrap();
    let mut group = c.benchmark_group("scope/1000_credentials_x_16_hosts");
    group.bench_function("exact_hit", |b| {
        b.iter(|| session.could_apply_to(black_box("api8.svc517.example.com")))
    });
    group.bench_function("wildcard_hit", |b| {
        b.iter(|| session.could_apply_to(black_box("a.b.svc517-3.example.net")))
    });
    group.bench_function("miss", |b| {
        b.iter(|| session.could_apply_to(black_box("registry.npmjs.org")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
