//! The aws-chunked re-signer (SPEC §11). A body signed with the dummy secret, from chunks and
//! cut points the fuzzer chooses, must come out exactly as the same body signed with the real key;
//! the same body with one byte changed anywhere must never pass a data byte that was not signed:
//! if it completes, the payload it passed on is the original payload.
#![no_main]

use std::collections::VecDeque;

use bytes::Bytes;
use keyswap::signing::chunked::{Chain, Resigner};
use keyswap::signing::sigv4::{Credential, chunk_string_to_sign, sha256_hex, sign, signing_key};
use libfuzzer_sys::fuzz_target;

const DATE: &str = "20260101T000000Z";
const REAL: &str = "real-secret-key";

fn credential() -> Credential {
    Credential::parse("AKIAEXAMPLE/20260101/us-east-1/s3/aws4_request").expect("credential")
}

/// The body as a client holding `secret` writes it, chained from `seed`.
fn body(secret: &str, seed: &str, chunks: &[&[u8]]) -> Vec<u8> {
    let c = credential();
    let key = signing_key(secret.as_bytes(), &c);
    let mut previous = seed.to_string();
    let mut out = Vec::new();
    for data in chunks.iter().copied().chain(std::iter::once(&b""[..])) {
        let sig = sign(&key, &chunk_string_to_sign(DATE, &c.scope(), &previous, &sha256_hex(data)));
        out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        previous = sig;
    }
    out
}

fn chain() -> Chain {
    let c = credential();
    Chain {
        amz_date: DATE.into(),
        scope: c.scope(),
        client_key: signing_key(keyswap::vault::AWS_DUMMY_SECRET.as_bytes(), &c),
        client_previous: "client-seed".into(),
        real_key: signing_key(REAL.as_bytes(), &c),
        real_previous: "real-seed".into(),
    }
}

/// Runs `input` cut every `step` bytes; the output, or `None` on refusal.
fn run(input: &[u8], step: usize) -> Option<Vec<u8>> {
    let mut r = Resigner::new(chain(), false);
    let mut out = VecDeque::new();
    let mut done = false;
    for piece in input.chunks(step.max(1)) {
        r.feed(piece);
        done = r.advance(&mut out, false).ok()?;
    }
    if !done {
        done = r.advance(&mut out, true).ok()?;
    }
    assert!(done);
    Some(out.iter().flat_map(|b: &Bytes| b.to_vec()).collect())
}

/// The data bytes of a well-formed chunked body.
fn payload(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..end]).ok().and_then(|h| h.split(';').next()).and_then(|h| usize::from_str_radix(h, 16).ok()).expect("size");
        out.extend_from_slice(&rest[end + 2..end + 2 + size]);
        rest = &rest[end + 2 + size + 2..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (step, flip, rest) = (usize::from(data[0]) + 1, usize::from(data[1]) * 7, &data[2..]);
    let chunks: Vec<&[u8]> = rest.split(|&b| b == b'|').filter(|c| !c.is_empty()).collect();
    let client = body(keyswap::vault::AWS_DUMMY_SECRET, "client-seed", &chunks);
    let expected = body(REAL, "real-seed", &chunks);
    assert_eq!(run(&client, step).as_deref(), Some(expected.as_slice()));

    let mut tampered = client.clone();
    let at = flip % tampered.len();
    tampered[at] ^= data[1] | 1;
    if let Some(out) = run(&tampered, step) {
        assert_eq!(out.len(), tampered.len());
        assert_eq!(payload(&out), payload(&client), "unsigned data passed");
    }
});
