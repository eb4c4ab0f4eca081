//! Signing credentials (SPEC §11): the cost of signing a request again (header-signed S3 PUT with
//! its canonical request and key derivation; a presigned GET) and the throughput of re-signing a
//! chunk-signed body (64 KiB chunks: each checked against the client's chain, then signed again).

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use keyswap::signing::chunked::{Chain, Resigner};
use keyswap::signing::sigv4::{
    self, Canonical, Credential, chunk_string_to_sign, sha256_hex, sign, signing_key,
};

const DATE: &str = "20261204T120000Z";
const SECRET: &str = "realSecretKey/+ABCDEFGHIJKLMNOPQRSTUVWXYZ0";

fn credential() -> Credential {
    Credential::parse("AKIAREALKEY000000001/20261204/us-east-1/s3/aws4_request").unwrap()
}

fn resign_header(headers: &HeaderMap, signed: &[String]) -> String {
    let c = credential();
    let canonical = Canonical {
        method: "PUT",
        path: "/bucket/dir/object.json",
        query: Some("x-id=PutObject"),
        signed_headers: signed,
        payload_hash: sigv4::UNSIGNED_PAYLOAD,
        s3: true,
        skip_param: None,
    };
    let text = canonical
        .text(headers, "bucket.s3.us-east-1.amazonaws.com")
        .unwrap();
    let key = signing_key(SECRET.as_bytes(), &c);
    sign(&key, &sigv4::string_to_sign(DATE, &c, &text))
}

fn requests(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("content-length", "1024"),
        ("x-amz-content-sha256", sigv4::UNSIGNED_PAYLOAD),
        ("x-amz-date", DATE),
        ("x-amz-meta-owner", "ci job 42"),
        ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
    ] {
        headers.insert(k, HeaderValue::from_static(v));
    }
    let signed: Vec<String> = "content-length;content-md5;content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-owner"
        .split(';')
        .map(String::from)
        .collect();
    c.bench_function("sign again: header-signed S3 PUT", |b| {
        b.iter(|| black_box(resign_header(black_box(&headers), &signed)))
    });
    let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAREALKEY000000001%2F20261204%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261204T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host";
    let host_only = vec!["host".to_string()];
    c.bench_function("sign again: presigned GET", |b| {
        b.iter(|| {
            let cr = credential();
            let canonical = Canonical {
                method: "GET",
                path: "/bucket/dir/object.json",
                query: Some(black_box(query)),
                signed_headers: &host_only,
                payload_hash: sigv4::UNSIGNED_PAYLOAD,
                s3: true,
                skip_param: None,
            };
            let text = canonical
                .text(&HeaderMap::new(), "bucket.s3.us-east-1.amazonaws.com")
                .unwrap();
            black_box(sign(
                &signing_key(SECRET.as_bytes(), &cr),
                &sigv4::string_to_sign(DATE, &cr, &text),
            ))
        })
    });
}

/// An 8 MiB body in 64 KiB chunks, signed with the dummy secret from `seed`.
fn chunked_body() -> Vec<u8> {
    let c = credential();
    let key = signing_key(keyswap::vault::AWS_DUMMY_SECRET.as_bytes(), &c);
    let data = vec![b'x'; 64 * 1024];
    let mut previous = "seed".to_string();
    let mut out = Vec::new();
    for i in 0..=128 {
        let chunk: &[u8] = if i == 128 { b"" } else { &data };
        let sig = sign(
            &key,
            &chunk_string_to_sign(DATE, &c.scope(), &previous, &sha256_hex(chunk)),
        );
        out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        previous = sig;
    }
    out
}

fn chunks(c: &mut Criterion) {
    let body = chunked_body();
    let mut group = c.benchmark_group("chunk-signed body");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function(
        "checked and signed again, 64 KiB chunks fed in 16 KiB frames",
        |b| {
            b.iter(|| {
                let cr = credential();
                let mut r = Resigner::new(
                    Chain {
                        amz_date: DATE.into(),
                        scope: cr.scope(),
                        client_key: signing_key(keyswap::vault::AWS_DUMMY_SECRET.as_bytes(), &cr),
                        client_previous: "seed".into(),
                        real_key: signing_key(SECRET.as_bytes(), &cr),
                        real_previous: "real".into(),
                    },
                    false,
                );
                let mut out = VecDeque::new();
                let mut n = 0;
                for frame in body.chunks(16 * 1024) {
                    r.feed(frame);
                    r.advance(&mut out, false).unwrap();
                    n += out.drain(..).map(|b| b.len()).sum::<usize>();
                }
                assert!(r.advance(&mut out, true).unwrap());
                black_box(n)
            })
        },
    );
    group.finish();
}

criterion_group!(benches, requests, chunks);
criterion_main!(benches);
