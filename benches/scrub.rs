//! Response scrubbing throughput (SPEC §8): a realistic 1 MiB JSON body (ids, names, URLs, tokens,
//! base64 blobs; not a repeated byte) fed in 16 KiB chunks through the scrubbing table of 1 and of
//! 100 credentials in scope, each secret in every spelling keyswap recognises. `clean` holds no
//! secret; `reflected` holds one secret in four spellings.

use std::hint::black_box;

use base64::Engine as _;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyswap::substitute::scrub::{Masked, ScrubTable};

const CHUNK: usize = 16 * 1024;
const BODY: usize = 1 << 20;

/// A small deterministic generator: the same body every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| ALPHABET[(self.next() % 62) as usize] as char)
            .collect()
    }
}

/// Credentials' secrets: GitHub-style tokens, and every tenth one with the characters encoders
/// treat specially.
fn secrets(n: usize) -> Vec<(String, String)> {
    let mut rng = Lcg(99);
    (0..n)
        .map(|i| {
            let secret = if i % 10 == 9 {
                format!("p@ss/{}+&<\"x'={}", rng.token(12), rng.token(8))
            } else {
                format!("ghp_{}", rng.token(36))
            };
            (secret, format!("ks-ph-vcrd_{i:04}"))
        })
        .collect()
}

fn json_body(reflect: Option<&str>) -> Vec<u8> {
    let mut rng = Lcg(7);
    let mut out = String::from("{\"items\":[");
    let mut i = 0u64;
    while out.len() < BODY - 600 {
        let blob = base64::engine::general_purpose::STANDARD.encode(rng.token(48));
        out.push_str(&format!(
            "{{\"id\":{},\"name\":\"user-{}\",\"email\":\"{}@example.com\",\"url\":\"https://api.example.com/v1/items/{}?page={}&sort=desc\",\"tags\":[\"alpha\",\"beta\",\"{}\"],\"commit\":\"{}\",\"avatar\":\"{}\",\"score\":{}.{},\"active\":{}}},",
            rng.next(),
            rng.token(8),
            rng.token(10),
            i,
            rng.next() % 100,
            rng.token(5),
            rng.token(40).to_lowercase(),
            blob,
            rng.next() % 1000,
            rng.next() % 100,
            i % 2 == 0,
        ));
        if let Some(secret) = reflect
            && i % 1000 == 500
        {
            let b64 = base64::engine::general_purpose::STANDARD.encode(format!("user:{secret}"));
            let json = serde_json::to_string(secret).unwrap();
            out.push_str(&format!(
                "{{\"raw\":\"{secret}\",\"json\":{json},\"basic\":\"Basic {b64}\",\"lower\":\"{}\"}},",
                secret.to_lowercase()
            ));
        }
        i += 1;
    }
    out.push_str("{}]}");
    out.into_bytes()
}

fn table(secrets: &[(String, String)]) -> ScrubTable {
    ScrubTable::build(
        secrets.iter().enumerate().map(|(entry, (s, p))| Masked {
            entry,
            secret: s.as_bytes(),
            placeholder: p.as_bytes(),
        }),
        Vec::new(),
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let all = secrets(100);
    let mut group = c.benchmark_group("scrub/1MiB_json");
    group.throughput(Throughput::Bytes(BODY as u64));
    for (label, n) in [("1_credential", 1), ("100_credentials", 100)] {
        let table = table(&all[..n]);
        for (kind, reflect) in [("clean", None), ("reflected", Some(all[0].0.as_str()))] {
            let body = json_body(reflect);
            let chunks: Vec<Bytes> = body.chunks(CHUNK).map(Bytes::copy_from_slice).collect();
            // What is measured is a scrubber that works: the reflected secret is gone.
            let mut s = table.scrubber(&[]);
            let mut out: Vec<u8> = chunks.iter().flat_map(|c| s.push(c.clone())).collect();
            out.extend_from_slice(&s.finish());
            let secret = all[0].0.as_bytes();
            assert!(
                !out.windows(secret.len()).any(|w| w == secret),
                "{label}/{kind}"
            );
            assert_eq!(s.replaced() > 0, reflect.is_some(), "{label}/{kind}");
            group.bench_function(format!("{label}/{kind}"), |b| {
                b.iter(|| {
                    let mut s = table.scrubber(&[]);
                    let mut n = 0;
                    for chunk in &chunks {
                        n += s.push(chunk.clone()).len();
                    }
                    black_box(n + s.finish().len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
