//! The re-signer against AWS's chunked-upload example: a body signed with one key comes out with
//! exactly the chunk signatures AWS's documentation gives for the example key.

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};

use super::*;
use crate::signing::sigv4::{Credential, signing_key};

const EXAMPLE_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
const DATE: &str = "20130524T000000Z";

fn credential() -> Credential {
    Credential::parse("AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request").unwrap()
}

fn chain(client_secret: &str, client_seed: &str) -> Chain {
    let c = credential();
    Chain {
        amz_date: DATE.into(),
        scope: c.scope(),
        client_key: signing_key(client_secret.as_bytes(), &c),
        client_previous: client_seed.into(),
        real_key: signing_key(EXAMPLE_KEY.as_bytes(), &c),
        real_previous: SEED.into(),
    }
}

/// A chunk-signed body as a client holding `secret` writes it (seed `seed`).
fn client_body(secret: &str, seed: &str, chunks: &[&[u8]], trailers: Option<&str>) -> Vec<u8> {
    let c = credential();
    let key = signing_key(secret.as_bytes(), &c);
    let mut previous = seed.to_string();
    let mut out = Vec::new();
    for data in chunks.iter().chain(std::iter::once(&&b""[..])) {
        let sig = sign(
            &key,
            &chunk_string_to_sign(DATE, &c.scope(), &previous, &sha256_hex(data)),
        );
        out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        previous = sig;
        if !data.is_empty() || trailers.is_none() {
            out.extend_from_slice(b"\r\n");
        }
    }
    if let Some(t) = trailers {
        let sig = sign(
            &key,
            &trailer_string_to_sign(
                DATE,
                &c.scope(),
                &previous,
                &sha256_hex(format!("{t}\n").as_bytes()),
            ),
        );
        out.extend_from_slice(format!("{t}\r\nx-amz-trailer-signature:{sig}\r\n\r\n").as_bytes());
    }
    out
}

/// Feeds `input` in frames of `step` bytes through the re-signer.
async fn resign(input: &[u8], step: usize, chain: Chain, trailer: bool) -> Result<Vec<u8>, String> {
    let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = input
        .chunks(step)
        .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let inner = StreamBody::new(futures_util::stream::iter(frames));
    let body = Resigned::new(inner, chain, trailer);
    match body.collect().await {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(e) => Err(e.to_string()),
    }
}

fn signatures(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    text.match_indices("signature=")
        .map(|(i, _)| text[i + 10..i + 74].to_string())
        .chain(
            text.match_indices("signature:")
                .map(|(i, _)| text[i + 10..i + 74].to_string()),
        )
        .collect()
}

#[tokio::test]
async fn a_body_comes_out_with_awss_example_signatures() {
    let dummy = crate::vault::AWS_DUMMY_SECRET;
    let a = vec![b'a'; 65536];
    let b = vec![b'a'; 1024];
    let input = client_body(dummy, "0123", &[&a, &b], None);
    for step in [1, 7, 4096, input.len()] {
        let out = resign(&input, step, chain(dummy, "0123"), false)
            .await
            .unwrap_or_else(|e| panic!("step {step}: {e}"));
        assert_eq!(out.len(), input.len(), "the length is kept");
        assert_eq!(
            signatures(&out),
            [
                "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
                "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
                "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
            ]
        );
        // Everything but the signatures is passed on as it came.
        let strip = |v: &[u8]| {
            let mut v = v.to_vec();
            for s in signatures(&v.clone()) {
                let at = memchr::memmem::find(&v, s.as_bytes()).unwrap();
                v.drain(at..at + 64);
            }
            v
        };
        assert_eq!(strip(&out), strip(&input));
    }
}

#[tokio::test]
async fn trailers_are_signed_again() {
    let dummy = crate::vault::AWS_DUMMY_SECRET;
    let input = client_body(
        dummy,
        "s",
        &[b"hello"],
        Some("x-amz-checksum-crc32:NhCmhg=="),
    );
    let out = resign(&input, 3, chain(dummy, "s"), true).await.unwrap();
    assert_eq!(out.len(), input.len());
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("x-amz-checksum-crc32:NhCmhg==\r\nx-amz-trailer-signature:"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\n"));
    // The trailer signature chains from keyswap's last chunk signature.
    let c = credential();
    let real = signing_key(EXAMPLE_KEY.as_bytes(), &c);
    let sigs = signatures(text.as_bytes());
    let expected = sign(
        &real,
        &trailer_string_to_sign(
            DATE,
            &c.scope(),
            &sigs[1],
            &sha256_hex(b"x-amz-checksum-crc32:NhCmhg==\n"),
        ),
    );
    assert_eq!(sigs[2], expected);
}

#[tokio::test]
async fn a_broken_chain_or_frame_is_refused() {
    let dummy = crate::vault::AWS_DUMMY_SECRET;
    // Signed with another secret than the dummy.
    let other = client_body("not-the-dummy", "s", &[b"hello"], None);
    assert!(
        resign(&other, 5, chain(dummy, "s"), false)
            .await
            .unwrap_err()
            .contains("chain")
    );
    // Data changed after signing.
    let mut tampered = client_body(dummy, "s", &[b"hello"], None);
    let at = memchr::memmem::find(&tampered, b"hello").unwrap();
    tampered[at] = b'j';
    assert!(
        resign(&tampered, 5, chain(dummy, "s"), false)
            .await
            .unwrap_err()
            .contains("chain")
    );
    // A chunk replayed in another position (chunks chain from the previous signature).
    let two = client_body(dummy, "s", &[b"one", b"two"], None);
    let text = String::from_utf8(two).unwrap();
    let first = &text[..text.find("two").unwrap() - 83];
    let swapped = format!("{first}{first}");
    assert!(
        resign(swapped.as_bytes(), 9, chain(dummy, "s"), false)
            .await
            .is_err()
    );
    // Truncated, and a size larger than allowed.
    let whole = client_body(dummy, "s", &[b"hello"], None);
    assert!(
        resign(&whole[..whole.len() - 10], 5, chain(dummy, "s"), false)
            .await
            .unwrap_err()
            .contains("ended")
    );
    let huge = format!("2000000;chunk-signature={}\r\n", "0".repeat(64));
    assert!(
        resign(huge.as_bytes(), 64, chain(dummy, "s"), false)
            .await
            .unwrap_err()
            .contains("16 MiB")
    );
}
