//! Response scrubbing (SPEC §8): for any set of credentials — secrets equal to, extending or
//! contained in one another — and any reflection of one secret in any spelling keyswap lists,
//! between arbitrary bytes and cut into arbitrary chunks, the client never receives the secret,
//! raw or in that spelling. Also: any chunking gives the one-shot result.
#![no_main]

use bytes::Bytes;
use keyswap::substitute::scrub::{Masked, ScrubTable};
use keyswap::substitute::spell::spellings;
use libfuzzer_sys::fuzz_target;

/// Secrets use upper case, digits and the characters encoders treat specially; placeholders are
/// lower case, so no placeholder (or its spelling) can spell a secret by chance.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/+&<>\"' %=~*\\";

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn run(table: &ScrubTable, text: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut s = table.scrubber(&[]);
    let mut out = Vec::new();
    let mut rest = text;
    for &cut in cuts {
        let n = cut.min(rest.len());
        out.extend_from_slice(&s.push(Bytes::copy_from_slice(&rest[..n])));
        rest = &rest[n..];
    }
    out.extend_from_slice(&s.push(Bytes::copy_from_slice(rest)));
    out.extend_from_slice(&s.finish());
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let count = 1 + usize::from(input.byte()) % 40;
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for _ in 0..count {
        let len = 8 + usize::from(input.byte()) % 24;
        let fresh: Vec<u8> = (0..len)
            .map(|_| ALPHABET[usize::from(input.byte()) % ALPHABET.len()])
            .collect();
        let secret = match (input.byte() % 4, secrets.last()) {
            (1, Some(prev)) => prev.clone(),
            (2, Some(prev)) => [prev.as_slice(), &fresh[..4]].concat(),
            (3, Some(prev)) if prev.len() > 9 => prev[..prev.len() - 1].to_vec(),
            _ => fresh,
        };
        secrets.push(secret);
    }
    let placeholders: Vec<String> = (0..count).map(|i| format!("ks-ph-vcrd_{i:02}")).collect();
    let Some(table) = ScrubTable::build(
        secrets.iter().zip(&placeholders).enumerate().map(|(entry, (s, p))| Masked {
            entry,
            secret: s,
            placeholder: p.as_bytes(),
        }),
        Vec::new(),
    ) else {
        return;
    };
    let reflected = usize::from(input.byte()) % count;
    let secret = &secrets[reflected];
    let spelled = spellings(secret, placeholders[reflected].as_bytes());
    let (spelling, _) = &spelled[usize::from(input.byte()) % spelled.len()];
    let cuts: Vec<usize> = (0..8).map(|_| usize::from(input.byte() % 32)).collect();
    let mut text = input.0.to_vec();
    let at = text.len() / 2;
    text.splice(at..at, spelling.iter().copied());

    let out = run(&table, &text, &cuts);
    assert!(!contains(&out, secret), "the raw secret came back");
    assert!(!contains(&out, spelling), "a spelling of the secret came back");
    assert_eq!(out, run(&table, &text, &[]), "chunking changed the result");
});
