//! `ca-bundle.p12`: the CA bundle as a PKCS#12 trust store (RFC 7292) that Java's `keytool` and
//! `javax.net.ssl` read (SPEC §9), password `changeit`. Java ignores `SSL_CERT_FILE`; its
//! `JAVA_TOOL_OPTIONS` from `keyswap env` point `javax.net.ssl.trustStore` here.
//!
//! Only certificates are stored, unencrypted (they are public), each in a `certBag` marked with
//! Oracle's trusted-key-usage attribute — without it Java reads a certificate bag as part of a key
//! entry, not as a trust anchor. The file carries an HMAC-SHA256 integrity MAC under the password,
//! keyed by the PKCS#12 key derivation (RFC 7292 Appendix B), as Java checks it when a password is
//! given. The DER is written here: a few dozen lines, against a dependency tree of ASN.1 crates.

use ring::{digest, hmac, rand::SecureRandom as _};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// The password Java's tooling assumes for trust stores.
pub const PASSWORD: &str = "changeit";
/// PBKDF iterations for the MAC key (Java's default for PKCS#12 since JDK 12).
const ITERATIONS: u32 = 10_000;

const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_CERT_BAG: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03,
];
const OID_X509_CERT: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];
const OID_FRIENDLY_NAME: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x14];
/// 2.16.840.1.113894.746875.1.1: Oracle's "trusted for these key usages".
const OID_ORACLE_TRUSTED_USAGE: &[u8] = &[
    0x60, 0x86, 0x48, 0x01, 0x86, 0xf9, 0x66, 0xad, 0xca, 0x7b, 0x01, 0x01,
];
const OID_ANY_EXTENDED_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25, 0x00];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];

/// The certificates of a PEM text, as DER (other blocks and unreadable ones are skipped: a system
/// bundle may hold comments and the odd malformed entry).
pub fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|der| der.to_vec())
        .collect()
}

/// A PKCS#12 trust store holding `certificates` (DER), the first named `keyswap-ca`.
pub fn pkcs12(certificates: &[Vec<u8>]) -> Result<Vec<u8>, ring::error::Unspecified> {
    let bags: Vec<u8> = certificates
        .iter()
        .enumerate()
        .flat_map(|(i, der)| {
            let alias = if i == 0 {
                "keyswap-ca".to_string()
            } else {
                format!("root-{i}")
            };
            cert_bag(der, &alias)
        })
        .collect();
    let safe_contents = tlv(0x30, &bags);
    let authenticated_safe = tlv(0x30, &data_content_info(&safe_contents));
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut salt)?;
    let key = mac_key(PASSWORD, &salt, ITERATIONS);
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &key),
        &authenticated_safe,
    );
    let mac_data = tlv(
        0x30,
        &[
            tlv(
                0x30,
                &[
                    tlv(0x30, &[tlv(0x06, OID_SHA256), vec![0x05, 0x00]].concat()),
                    tlv(0x04, tag.as_ref()),
                ]
                .concat(),
            ),
            tlv(0x04, &salt),
            integer(ITERATIONS),
        ]
        .concat(),
    );
    Ok(tlv(
        0x30,
        &[integer(3), data_content_info(&authenticated_safe), mac_data].concat(),
    ))
}

fn cert_bag(der: &[u8], alias: &str) -> Vec<u8> {
    let cert_bag = tlv(
        0x30,
        &[tlv(0x06, OID_X509_CERT), tlv(0xa0, &tlv(0x04, der))].concat(),
    );
    let name: Vec<u8> = alias.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let attributes = tlv(
        0x31,
        &[
            tlv(
                0x30,
                &[tlv(0x06, OID_FRIENDLY_NAME), tlv(0x31, &tlv(0x1e, &name))].concat(),
            ),
            tlv(
                0x30,
                &[
                    tlv(0x06, OID_ORACLE_TRUSTED_USAGE),
                    tlv(0x31, &tlv(0x06, OID_ANY_EXTENDED_KEY_USAGE)),
                ]
                .concat(),
            ),
        ]
        .concat(),
    );
    tlv(
        0x30,
        &[tlv(0x06, OID_CERT_BAG), tlv(0xa0, &cert_bag), attributes].concat(),
    )
}

/// `ContentInfo { id-data, [0] EXPLICIT OCTET STRING content }`.
fn data_content_info(content: &[u8]) -> Vec<u8> {
    tlv(
        0x30,
        &[tlv(0x06, OID_DATA), tlv(0xa0, &tlv(0x04, content))].concat(),
    )
}

/// The MAC key: RFC 7292 B.2 with SHA-256 (u = 32, v = 64), ID 3, one block.
fn mac_key(password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    const V: usize = 64;
    let mut bmp: Vec<u8> = password.encode_utf16().flat_map(u16::to_be_bytes).collect();
    bmp.extend_from_slice(&[0, 0]);
    let fill = |s: &[u8]| -> Vec<u8> {
        if s.is_empty() {
            return Vec::new();
        }
        let len = s.len().div_ceil(V) * V;
        s.iter().copied().cycle().take(len).collect()
    };
    let mut input = vec![3u8; V];
    input.extend(fill(salt));
    input.extend(fill(&bmp));
    let mut a = digest::digest(&digest::SHA256, &input).as_ref().to_vec();
    for _ in 1..iterations {
        a = digest::digest(&digest::SHA256, &a).as_ref().to_vec();
    }
    a
}

fn integer(n: u32) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(3);
    let mut content = bytes[first..].to_vec();
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    tlv(0x02, &content)
}

/// One DER element: tag, definite length, content.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - first) as u8);
        out.extend_from_slice(&bytes[first..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_and_integers() {
        assert_eq!(tlv(0x04, &[1, 2]), [0x04, 2, 1, 2]);
        assert_eq!(&tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(&tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(integer(3), [0x02, 1, 3]);
        assert_eq!(integer(10_000), [0x02, 2, 0x27, 0x10]);
        assert_eq!(integer(128), [0x02, 2, 0, 128]);
    }

    #[test]
    fn pem_blocks_are_read_in_order() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBAUG\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificates(pem), [vec![1, 2, 3], vec![4, 5, 6]]);
    }
}
