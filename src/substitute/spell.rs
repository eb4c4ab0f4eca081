//! The spellings in which a server may write a secret back (SPEC §8), each paired with the
//! placeholder written the same way, so a response can be masked whatever encoder produced it.
//!
//! A hostile or merely chatty upstream reflects what it received through its framework's encoders:
//! a JSON serializer (PHP escapes `/`, Go and Gson escape `<>&`, Python escapes non-ASCII), a URL
//! encoder (upper- or lower-case hex, `+` for space, each with its own set of characters left
//! alone), an HTML template, or base64 inside some larger token. Each encoder is modelled here as a
//! *profile*; a secret is spelled under every profile and the distinct results become patterns.
//! For an ordinary token (letters, digits, `-_.`) every profile gives the secret itself, so the
//! usual cost is the raw pattern plus a few base64 runs.
//!
//! Base64 is different in kind: a secret inside a larger encoded value starts at one of three
//! byte alignments, and the characters at its edges mix in bits of its neighbours. What is fixed
//! by the secret alone is the run of whole 4-character groups inside; that run is the pattern, and
//! it is masked by the placeholder's run at the same alignment.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use super::stream::Pair;

/// A base64 run shorter than this (6 bytes of secret) would match unrelated data too often.
const MIN_BASE64_RUN: usize = 8;

/// Every spelling of `secret`, each with `placeholder` spelled alike, the raw one first; no two
/// patterns equal.
pub fn spellings(secret: &[u8], placeholder: &[u8]) -> Vec<Pair> {
    let mut out = Spellings::default();
    out.add(secret.to_vec(), placeholder.to_vec());
    // hyper writes header names in lower case: a secret reflected into a name comes back so.
    out.add(
        secret.to_ascii_lowercase(),
        placeholder.to_ascii_lowercase(),
    );
    for profile in PERCENT {
        for upper in [true, false] {
            out.spell(secret, placeholder, |s| percent(s, profile, upper));
        }
    }
    // Twice percent-encoded: a URL carried in another URL's parameter (a redirect target).
    for upper in [true, false] {
        let twice = |s: &[u8]| percent(&percent(s, &PERCENT[0], upper), &PERCENT[0], upper);
        out.spell(secret, placeholder, twice);
    }
    // JSON, then JSON inside an HTML attribute and JSON inside base64 (a JWT-like token).
    let mut json_spellings = Vec::new();
    if let (Ok(text), Ok(ph)) = (
        std::str::from_utf8(secret),
        std::str::from_utf8(placeholder),
    ) {
        for profile in JSON {
            for upper in [true, false] {
                let pair = (json(text, profile, upper), json(ph, profile, upper));
                if pair.0 != secret && !json_spellings.contains(&pair) {
                    json_spellings.push(pair);
                }
            }
        }
    }
    for (pattern, replacement) in &json_spellings {
        out.add(pattern.clone(), replacement.clone());
        for profile in &HTML[..4] {
            out.spell(pattern, replacement, |s| html(s, profile));
        }
        out.base64(pattern, replacement);
    }
    for profile in HTML {
        out.spell(secret, placeholder, |s| html(s, profile));
    }
    out.spell(secret, placeholder, quoted_printable);
    // A body in UTF-16 (declared by its charset), little- and big-endian.
    if let (Ok(text), Ok(ph)) = (
        std::str::from_utf8(secret),
        std::str::from_utf8(placeholder),
    ) {
        for big in [false, true] {
            out.add(utf16(text, big), utf16(ph, big));
        }
    }
    out.base64(secret, placeholder);
    out.0
}

/// The distinct spellings collected so far.
#[derive(Default)]
struct Spellings(Vec<Pair>);

impl Spellings {
    fn add(&mut self, pattern: Vec<u8>, replacement: Vec<u8>) {
        let pattern = Zeroizing::new(pattern);
        if !pattern.is_empty() && !self.0.iter().any(|(p, _)| *p == pattern) {
            self.0.push((pattern, Zeroizing::new(replacement)));
        }
    }

    /// The secret and the placeholder spelled by one encoder.
    fn spell(&mut self, secret: &[u8], placeholder: &[u8], encode: impl Fn(&[u8]) -> Vec<u8>) {
        self.add(encode(secret), encode(placeholder));
    }

    /// The base64 runs (standard and URL-safe, three alignments) of `secret`.
    fn base64(&mut self, secret: &[u8], placeholder: &[u8]) {
        for skip in 0..3 {
            for url_safe in [false, true] {
                let (Some(pattern), Some(replacement)) = (
                    base64_run(secret, skip, url_safe),
                    base64_run(placeholder, skip, url_safe),
                ) else {
                    continue;
                };
                if pattern.len() >= MIN_BASE64_RUN {
                    self.add(pattern, replacement);
                }
            }
        }
    }
}

/// Quoted-printable (RFC 2045, as mail and some multipart bodies carry text): `=` and anything
/// outside printable ASCII as `=XX`.
fn quoted_printable(s: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(s.len() + 8);
    for &b in s {
        if b == b'=' || !(b == b' ' || b.is_ascii_graphic()) {
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            out.push(b);
        }
    }
    out
}

fn utf16(s: &str, big_endian: bool) -> Vec<u8> {
    s.encode_utf16()
        .flat_map(|u| {
            if big_endian {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            }
        })
        .collect()
}

/// A URL encoder: the bytes it leaves alone besides ASCII letters and digits, and how it writes
/// a space.
struct Percent {
    keep: &'static [u8],
    plus_for_space: bool,
}

const PERCENT: &[Percent] = &[
    // RFC 3986 unreserved: Go's QueryEscape/PathEscape core, PHP rawurlencode, Rust's crates.
    Percent {
        keep: b"-._~",
        plus_for_space: false,
    },
    Percent {
        keep: b"-._~",
        plus_for_space: true,
    },
    // PHP urlencode (and `~` as %7E).
    Percent {
        keep: b"-._",
        plus_for_space: true,
    },
    Percent {
        keep: b"-._",
        plus_for_space: false,
    },
    // Java URLEncoder.
    Percent {
        keep: b"-._*",
        plus_for_space: true,
    },
    // JavaScript encodeURIComponent.
    Percent {
        keep: b"-._~!*'()",
        plus_for_space: false,
    },
    // Python quote (safe="/") and quote_plus.
    Percent {
        keep: b"-._~/",
        plus_for_space: false,
    },
    Percent {
        keep: b"-._~",
        plus_for_space: true,
    },
    // Path encoders that keep the sub-delimiters (JavaScript encodeURI, Go's url.URL.String).
    Percent {
        keep: b"-._~!$&'()*+,;=:@/",
        plus_for_space: false,
    },
];

fn percent(s: &[u8], profile: &Percent, upper: bool) -> Vec<u8> {
    let hex: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Vec::with_capacity(s.len() * 3);
    for &b in s {
        if b.is_ascii_alphanumeric() || profile.keep.contains(&b) {
            out.push(b);
        } else if b == b' ' && profile.plus_for_space {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
        }
    }
    out
}

/// A JSON string encoder: which characters beyond `"`, `\` and controls it escapes as `\uXXXX`.
struct Json {
    slash: bool,
    /// Escaped for safe embedding in HTML (Go: `<>&`; Gson adds `='`).
    html: &'static str,
    non_ascii: bool,
}

const JSON: &[Json] = &[
    // serde_json, JavaScript JSON.stringify, Jackson.
    Json {
        slash: false,
        html: "",
        non_ascii: false,
    },
    // Python json.dumps (ensure_ascii).
    Json {
        slash: false,
        html: "",
        non_ascii: true,
    },
    // PHP json_encode.
    Json {
        slash: true,
        html: "",
        non_ascii: true,
    },
    Json {
        slash: true,
        html: "",
        non_ascii: false,
    },
    // Go encoding/json.
    Json {
        slash: false,
        html: "<>&\u{2028}\u{2029}",
        non_ascii: false,
    },
    // Gson.
    Json {
        slash: false,
        html: "<>&='\u{2028}\u{2029}",
        non_ascii: false,
    },
    Json {
        slash: false,
        html: "<>&='",
        non_ascii: true,
    },
    // PHP with JSON_HEX_TAG | JSON_HEX_AMP | JSON_HEX_APOS | JSON_HEX_QUOT style.
    Json {
        slash: true,
        html: "<>&'\"",
        non_ascii: true,
    },
    // PHP with JSON_HEX_TAG, and with JSON_HEX_TAG | JSON_HEX_AMP.
    Json {
        slash: true,
        html: "<>",
        non_ascii: true,
    },
    Json {
        slash: true,
        html: "<>&",
        non_ascii: true,
    },
    // .NET System.Text.Json's default encoder.
    Json {
        slash: false,
        html: "<>&'\"+`",
        non_ascii: true,
    },
];

fn json(s: &str, profile: &Json, upper: bool) -> Vec<u8> {
    let mut out = String::with_capacity(s.len() + 8);
    let mut units = [0u16; 2];
    for c in s.chars() {
        let short = match c {
            '"' if !profile.html.contains('"') => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' if profile.slash => Some("\\/"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            _ => None,
        };
        if let Some(escaped) = short {
            out.push_str(escaped);
        } else if c.is_control() || profile.html.contains(c) || (!c.is_ascii() && profile.non_ascii)
        {
            for unit in c.encode_utf16(&mut units) {
                if upper {
                    out.push_str(&format!("\\u{unit:04X}"));
                } else {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        } else {
            out.push(c);
        }
    }
    out.into_bytes()
}

/// An HTML or XML escaper: the entity it writes for each of `& < > " '` (`None`: left alone), and for `+`.
struct Html {
    entities: [Option<&'static str>; 5],
    plus: Option<&'static str>,
}

const HTML_CHARS: [u8; 5] = *b"&<>\"'";

const HTML: &[Html] = &[
    // PHP htmlspecialchars (ENT_QUOTES, PHP 8.1+ writes &#039;).
    Html {
        entities: [
            Some("&amp;"),
            Some("&lt;"),
            Some("&gt;"),
            Some("&quot;"),
            Some("&#039;"),
        ],
        plus: None,
    },
    // MarkupSafe, Jinja (and &#39; generally).
    Html {
        entities: [
            Some("&amp;"),
            Some("&lt;"),
            Some("&gt;"),
            Some("&#34;"),
            Some("&#39;"),
        ],
        plus: None,
    },
    Html {
        entities: [
            Some("&amp;"),
            Some("&lt;"),
            Some("&gt;"),
            Some("&quot;"),
            Some("&#39;"),
        ],
        plus: None,
    },
    // Python html.escape, Django.
    Html {
        entities: [
            Some("&amp;"),
            Some("&lt;"),
            Some("&gt;"),
            Some("&quot;"),
            Some("&#x27;"),
        ],
        plus: None,
    },
    // Go html/template (also escapes `+`).
    Html {
        entities: [
            Some("&amp;"),
            Some("&lt;"),
            Some("&gt;"),
            Some("&#34;"),
            Some("&#39;"),
        ],
        plus: Some("&#43;"),
    },
    // XML and XHTML (&apos;).
    Html {
        entities: [
            Some("&amp;"),
            Some("&lt;"),
            Some("&gt;"),
            Some("&quot;"),
            Some("&apos;"),
        ],
        plus: None,
    },
    // Text content only (html.escape(quote=False), many template engines outside attributes).
    Html {
        entities: [Some("&amp;"), Some("&lt;"), Some("&gt;"), None, None],
        plus: None,
    },
    // Every character as a numeric reference, decimal and hexadecimal (both cases).
    Html {
        entities: [
            Some("&#38;"),
            Some("&#60;"),
            Some("&#62;"),
            Some("&#34;"),
            Some("&#39;"),
        ],
        plus: None,
    },
    Html {
        entities: [
            Some("&#x26;"),
            Some("&#x3c;"),
            Some("&#x3e;"),
            Some("&#x22;"),
            Some("&#x27;"),
        ],
        plus: None,
    },
    Html {
        entities: [
            Some("&#x26;"),
            Some("&#x3C;"),
            Some("&#x3E;"),
            Some("&#x22;"),
            Some("&#x27;"),
        ],
        plus: None,
    },
];

fn html(s: &[u8], profile: &Html) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 8);
    for &b in s {
        let entity = match HTML_CHARS.iter().position(|&c| c == b) {
            Some(i) => profile.entities[i],
            None if b == b'+' => profile.plus,
            None => None,
        };
        match entity {
            Some(e) => out.extend_from_slice(e.as_bytes()),
            None => out.push(b),
        }
    }
    out
}

/// The base64 characters fixed by `s` alone when it starts `skip` bytes before a group boundary
/// of the enclosing encoding (0, 1 or 2): the whole groups after those bytes.
fn base64_run(s: &[u8], skip: usize, url_safe: bool) -> Option<Vec<u8>> {
    let rest = s.get(skip..)?;
    let whole = &rest[..rest.len() / 3 * 3];
    let engine = if url_safe {
        &URL_SAFE_NO_PAD
    } else {
        &STANDARD_NO_PAD
    };
    Some(engine.encode(whole).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn patterns(secret: &str) -> Vec<String> {
        spellings(secret.as_bytes(), b"ks-ph-x")
            .into_iter()
            .map(|(p, _)| String::from_utf8_lossy(&p).into_owned())
            .collect()
    }

    fn has(secret: &str, spelled: &str) -> bool {
        patterns(secret)
            .iter()
            .any(|p| spelled.contains(p.as_str()))
    }

    #[test]
    fn a_plain_token_has_only_its_raw_and_base64_spellings() {
        let p = patterns("ghp_abcDEF123");
        assert_eq!(p[0], "ghp_abcDEF123");
        assert!(p.contains(&"ghp_abcdef123".to_string()));
        assert!(p.iter().all(|s| !s.contains('%') && !s.contains('\\')));
        assert!(p.len() <= 8, "{p:?}");
    }

    #[test]
    fn url_encoders_of_every_framework_are_covered() {
        let s = "a/b+c d~e*f'g&h";
        for spelled in [
            "a%2Fb%2Bc%20d~e%2Af%27g%26h", // RFC 3986
            "a%2fb%2bc%20d~e%2af%27g%26h", // lower-case hex
            "a%2Fb%2Bc+d%7Ee%2Af%27g%26h", // PHP urlencode
            "a%2Fb%2Bc+d%7Ee*f%27g%26h",   // Java URLEncoder
            "a%2Fb%2Bc%20d~e*f'g%26h",     // encodeURIComponent
            "a/b%2Bc%20d~e%2Af%27g%26h",   // Python quote
            "a%2Fb%2Bc+d~e%2Af%27g%26h",   // Python quote_plus
        ] {
            assert!(has(s, spelled), "{spelled}");
        }
    }

    #[test]
    fn json_encoders_of_every_framework_are_covered() {
        let s = "p/q<r>&s\"t'u=v\\w\u{e9}";
        for spelled in [
            "p/q<r>&s\\\"t'u=v\\\\w\u{e9}",                   // serde_json
            r#"p\/q<r>&s\"t'u=v\\w\u00e9"#,                   // PHP
            "p/q\\u003cr\\u003e\\u0026s\\\"t'u=v\\\\w\u{e9}", // Go
            "p/q\\u003cr\\u003e\\u0026s\\\"t\\u0027u\\u003dv\\\\w\u{e9}", // Gson
            r#"p/q<r>&s\"t'u=v\\w\u00E9"#,                    // upper-case hex
        ] {
            assert!(has(s, spelled), "{spelled:?} {:?}", patterns(s));
        }
        assert!(has("a\u{1F600}b", r#"a\ud83d\ude00b"#), "surrogate pairs");
        assert!(has("a\nb\u{1}", r#"a\nb\u0001"#));
    }

    #[test]
    fn composed_and_other_encoders_are_covered() {
        let aws = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        for spelled in [
            r#"wJalrXUtnFEMI/K7MDENG\u002BbPxRfiCYEXAMPLEKEY"#, // .NET
            r#"wJalrXUtnFEMI/K7MDENG\u002bbPxRfiCYEXAMPLEKEY"#,
            "wJalrXUtnFEMI%252FK7MDENG%252BbPxRfiCYEXAMPLEKEY", // twice percent-encoded
        ] {
            assert!(has(aws, spelled), "{spelled}");
        }
        let b = r#"tok/R3al+sec=&<>"'~!*x"#;
        for spelled in [
            r#"tok\/R3al+sec=\u0026\u003C\u003E\"'~!*x"#, // PHP HEX_TAG|HEX_AMP
            r#"tok/R3al\u002Bsec=\u0026\u003C\u003E\u0022\u0027~!*x"#, // .NET
            "tok/R3al+sec=&amp;&lt;&gt;\\&quot;&#x27;~!*x", // html.escape(json.dumps)
            "tok/R3al+sec=3D&<>\"'~!*x",                  // quoted-printable
        ] {
            assert!(has(b, spelled), "{spelled}");
        }
        // base64 of PHP's JSON of the secret (a JWT-like token).
        let php = r#"{"k": "wJalrXUtnFEMI\/K7MDENG+bPxRfiCYEXAMPLEKEY"}"#;
        assert!(has(aws, &STANDARD.encode(php)));
        // UTF-16, both byte orders.
        let le: Vec<u8> = "xx ghp_token_1234 yy"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let be: Vec<u8> = "ghp_token_1234"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        let found = |hay: &[u8]| {
            spellings(b"ghp_token_1234", b"ph")
                .iter()
                .any(|(p, _)| hay.windows(p.len()).any(|w| w == p.as_slice()))
        };
        assert!(found(&le) && found(&be));
    }

    #[test]
    fn html_escapers_are_covered() {
        let s = "a&b<c>d\"e'f+g";
        for spelled in [
            "a&amp;b&lt;c&gt;d&quot;e&#039;f+g",
            "a&amp;b&lt;c&gt;d&quot;e&#x27;f+g",
            "a&amp;b&lt;c&gt;d&#34;e&#39;f&#43;g",
            "a&amp;b&lt;c&gt;d\"e'f+g",
            "a&#38;b&#60;c&#62;d&#34;e&#39;f+g",
        ] {
            assert!(has(s, spelled), "{spelled}");
        }
    }

    #[test]
    fn base64_at_every_alignment_contains_a_pattern() {
        let secret = "s3cr3t-value-for-base64";
        for prefix in ["", "u", "us", "user:", "user:x"] {
            let whole = format!("{prefix}{secret}trailing");
            let std = STANDARD.encode(&whole);
            let url = URL_SAFE_NO_PAD.encode(&whole);
            assert!(has(secret, &std), "{prefix:?}");
            assert!(has(secret, &url), "{prefix:?}");
        }
    }

    #[test]
    fn a_spelling_is_replaced_by_the_placeholder_spelled_alike() {
        let pairs = spellings(b"a b", b"ph_~x");
        let find = |p: &str| {
            pairs
                .iter()
                .find(|(pat, _)| pat.as_slice() == p.as_bytes())
                .map(|(_, r)| String::from_utf8(r.to_vec()).unwrap())
        };
        assert_eq!(find("a%20b").as_deref(), Some("ph_~x"));
        assert_eq!(find("a&#32;b"), None, "no such encoder");
        let php = spellings(b"a~b c", b"ph_~x");
        let php = php
            .iter()
            .find(|(p, _)| p.as_slice() == b"a%7Eb+c")
            .unwrap();
        assert_eq!(
            php.1.as_slice(),
            b"ph_%7Ex",
            "PHP urlencode writes ~ as %7E"
        );
    }
}
