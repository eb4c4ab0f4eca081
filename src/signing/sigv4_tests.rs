//! Known answers from AWS's documentation (the SigV4 test suite's `get-vanilla`, and the S3
//! examples of header, presigned and chunked signing), so the signer is checked against AWS and
//! not against itself.

use http::{HeaderMap, HeaderValue};

use super::*;

const S3_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn signed(names: &str) -> Vec<String> {
    names.split(';').map(String::from).collect()
}

fn signature(
    secret: &str,
    credential: &str,
    amz_date: &str,
    canonical: &Canonical<'_>,
    h: &HeaderMap,
    host: &str,
) -> String {
    let credential = Credential::parse(credential).unwrap();
    let text = canonical.text(h, host).unwrap();
    sign(
        &signing_key(secret.as_bytes(), &credential),
        &string_to_sign(amz_date, &credential, &text),
    )
}

#[test]
fn get_vanilla_from_the_sigv4_test_suite() {
    let h = headers(&[("x-amz-date", "20150830T123600Z")]);
    let names = signed("host;x-amz-date");
    let c = Canonical {
        method: "GET",
        path: "/",
        query: None,
        signed_headers: &names,
        payload_hash: EMPTY_SHA256,
        s3: false,
        skip_param: None,
    };
    assert_eq!(
        signature(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request",
            "20150830T123600Z",
            &c,
            &h,
            "example.amazonaws.com"
        ),
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

#[test]
fn s3_get_object_with_a_range() {
    let h = headers(&[
        ("range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
    ]);
    let names = signed("host;range;x-amz-content-sha256;x-amz-date");
    let c = Canonical {
        method: "GET",
        path: "/test.txt",
        query: None,
        signed_headers: &names,
        payload_hash: EMPTY_SHA256,
        s3: true,
        skip_param: None,
    };
    assert_eq!(
        signature(
            S3_KEY,
            "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request",
            "20130524T000000Z",
            &c,
            &h,
            "examplebucket.s3.amazonaws.com"
        ),
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    );
}

#[test]
fn s3_presigned_get() {
    let names = signed("host");
    let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=0000";
    let c = Canonical {
        method: "GET",
        path: "/test.txt",
        query: Some(query),
        signed_headers: &names,
        payload_hash: UNSIGNED_PAYLOAD,
        s3: true,
        skip_param: Some("X-Amz-Signature"),
    };
    assert_eq!(
        signature(
            S3_KEY,
            "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request",
            "20130524T000000Z",
            &c,
            &HeaderMap::new(),
            "examplebucket.s3.amazonaws.com"
        ),
        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    );
}

#[test]
fn s3_chunked_upload_seed_and_chunks() {
    let h = headers(&[
        ("content-encoding", "aws-chunked"),
        ("content-length", "66824"),
        ("x-amz-content-sha256", STREAMING_SIGNED),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-decoded-content-length", "66560"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
    ]);
    let names = signed(
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class",
    );
    let c = Canonical {
        method: "PUT",
        path: "/examplebucket/chunkObject.txt",
        query: None,
        signed_headers: &names,
        payload_hash: STREAMING_SIGNED,
        s3: true,
        skip_param: None,
    };
    let credential =
        Credential::parse("AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request").unwrap();
    let key = signing_key(S3_KEY.as_bytes(), &credential);
    let seed = sign(
        &key,
        &string_to_sign(
            "20130524T000000Z",
            &credential,
            &c.text(&h, "s3.amazonaws.com").unwrap(),
        ),
    );
    assert_eq!(
        seed,
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    );
    let scope = credential.scope();
    let chunk = |previous: &str, data: &[u8]| {
        sign(
            &key,
            &chunk_string_to_sign("20130524T000000Z", &scope, previous, &sha256_hex(data)),
        )
    };
    let first = chunk(&seed, &[b'a'; 65536]);
    assert_eq!(
        first,
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
    );
    let second = chunk(&first, &[b'a'; 1024]);
    assert_eq!(
        second,
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
    );
    assert_eq!(
        chunk(&second, b""),
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
    );
}

#[test]
fn authorization_headers_are_read_or_refused() {
    let a = HeaderAuth::parse(
        "AWS4-HMAC-SHA256 Credential=AKIAX/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;X-Amz-Date, Signature=abc",
    )
    .unwrap()
    .unwrap();
    assert_eq!(a.credential.key_id, "AKIAX");
    assert_eq!(a.credential.service, "s3");
    assert_eq!(a.signed_headers, ["host", "x-amz-date"]);
    assert!(HeaderAuth::parse("Bearer x").is_none());
    assert!(HeaderAuth::parse("AWS4-HMAC-SHA256 Credential=AKIAX/2013/us/s3/aws4_request, SignedHeaders=host, Signature=a").unwrap().is_err());
    assert!(
        HeaderAuth::parse("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=a")
            .unwrap()
            .is_err()
    );
}

#[test]
fn queries_and_paths_are_canonical() {
    assert_eq!(
        canonical_query(Some("b=2&a=1&a=0&c"), None),
        "a=0&a=1&b=2&c="
    );
    assert_eq!(
        canonical_query(Some("k=a%20b+c&x=%7e"), None),
        "k=a%20b%2Bc&x=~"
    );
    assert_eq!(
        canonical_query(Some("s=1&X-Amz-Signature=z"), Some("X-Amz-Signature")),
        "s=1"
    );
    assert_eq!(remove_dot_segments("/a/./b/../c//d/"), "/a/c/d/");
    assert_eq!(remove_dot_segments(""), "/");
}
