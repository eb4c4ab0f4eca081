//! The streamed body substituter: the input, cut into chunks at fuzzer-chosen points, must come
//! out exactly as the one-shot replacement of the whole input (a placeholder split across chunks is
//! still found; nothing is lost, duplicated or reordered).
#![no_main]

use bytes::Bytes;
use keyswap::substitute::stream::{Pair, StreamReplacer};
use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

/// Overlapping patterns on purpose: a prefix of another, a shared tail, a one-byte pattern.
const PAIRS: &[(&[u8], &[u8])] = &[
    (b"ks-ph-a", b"SECRET-A"),
    (b"ks-ph-ab", b"SECRET-AB-LONGER"),
    (b"ph-abc", b""),
    (b"\xff", b"FF"),
];

fn replacer() -> StreamReplacer {
    let pairs: Vec<Pair> = PAIRS
        .iter()
        .map(|(p, r)| (Zeroizing::new(p.to_vec()), Zeroizing::new(r.to_vec())))
        .collect();
    StreamReplacer::from_pairs(pairs).expect("patterns compile")
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, body)) = data.split_first() else {
        return;
    };
    let mut whole = replacer();
    let mut expected = whole.push(Bytes::copy_from_slice(body)).to_vec();
    expected.extend_from_slice(&whole.finish());

    let mut chunked = replacer();
    let mut out = Vec::new();
    let mut rest = body;
    let mut step = usize::from(cuts % 13) + 1;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        out.extend_from_slice(&chunked.push(Bytes::copy_from_slice(&rest[..n])));
        rest = &rest[n..];
        step = (step * 7 + usize::from(cuts)) % 17 + 1;
    }
    out.extend_from_slice(&chunked.finish());
    assert_eq!(out, expected, "chunking changed the result");
    assert_eq!(chunked.replaced(), whole.replaced());
});
