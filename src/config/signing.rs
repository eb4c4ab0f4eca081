//! The two credential types that sign instead of being sent (SPEC §11): `aws_sigv4` and
//! `hmac_signature`. SECURITY: no message here repeats a secret.

use std::ops::Range;

use toml::Spanned;

use crate::vault::{self, AwsSigv4Auth, HmacAlgorithm, HmacAuth, Networking};

use super::{Validator, raw};

/// The fields a message template may name, besides `{header:NAME}`.
const MESSAGE_FIELDS: [&str; 5] = ["method", "path", "host", "body", "timestamp"];

impl Validator<'_> {
    pub(super) fn aws_sigv4_auth(
        &mut self,
        credential_id: &str,
        raw: raw::RawAuth,
        span: Range<usize>,
    ) -> Option<AwsSigv4Auth> {
        let access_key_id = self.secret_source(
            "access_key_id",
            raw.access_key_id,
            raw.access_key_id_env,
            raw.access_key_id_file,
            span.clone(),
        );
        let secret_access_key = self.secret_source(
            "secret_access_key",
            raw.secret_access_key,
            raw.secret_access_key_env,
            raw.secret_access_key_file,
            span.clone(),
        );
        let session_token = if raw.session_token.is_some()
            || raw.session_token_env.is_some()
            || raw.session_token_file.is_some()
        {
            Some(self.secret_source(
                "session_token",
                raw.session_token,
                raw.session_token_env,
                raw.session_token_file,
                span.clone(),
            )?)
        } else {
            None
        };
        let networking = self.required_networking("aws_sigv4", raw.networking, span.clone());
        let regions = self.names("regions", raw.regions);
        let services = self.names("services", raw.services);
        let placeholder = match raw.placeholder {
            Some(p) if vault::is_valid_aws_placeholder(p.get_ref()) => p.into_inner(),
            Some(p) => {
                self.error(
                    p.span(),
                    "an aws_sigv4 placeholder stands for an access key id: 16 to 128 characters of [A-Z0-9], like AKIA followed by 16",
                );
                return None;
            }
            None => vault::default_aws_placeholder(credential_id),
        };
        Some(AwsSigv4Auth {
            access_key_id: access_key_id?,
            secret_access_key: secret_access_key?,
            session_token,
            networking: networking?,
            regions: regions?,
            services: services?,
            placeholder,
        })
    }

    pub(super) fn hmac_auth(
        &mut self,
        credential_id: &str,
        raw: raw::RawAuth,
        span: Range<usize>,
    ) -> Option<HmacAuth> {
        let secret_name = self.secret_name("hmac_signature", raw.secret_name, span.clone());
        let secret = self.secret_source(
            "secret_value",
            raw.secret_value,
            raw.secret_value_env,
            raw.secret_value_file,
            span.clone(),
        );
        let networking = self.required_networking("hmac_signature", raw.networking, span.clone());
        let placeholder = self.placeholder(raw.placeholder, credential_id);
        let algorithm = match raw
            .algorithm
            .as_ref()
            .map(|a| (a.get_ref().as_str(), a.span()))
        {
            None | Some(("sha256", _)) => Some(HmacAlgorithm::Sha256),
            Some(("sha1", _)) => Some(HmacAlgorithm::Sha1),
            Some(("sha512", _)) => Some(HmacAlgorithm::Sha512),
            Some((other, s)) => {
                self.error(
                    s,
                    format!("unknown algorithm `{other}`: use sha1, sha256 or sha512"),
                );
                None
            }
        };
        let base64 = match raw
            .encoding
            .as_ref()
            .map(|e| (e.get_ref().as_str(), e.span()))
        {
            None | Some(("hex", _)) => Some(false),
            Some(("base64", _)) => Some(true),
            Some((other, s)) => {
                self.error(s, format!("unknown encoding `{other}`: use hex or base64"));
                None
            }
        };
        let message = match raw.message {
            Some(m) => self.message_template(m),
            None => Some("{timestamp}{method}{path}{body}".to_string()),
        };
        let signature_header = match raw.signature_header {
            Some(h) => self.header_name("signature_header", h),
            None => {
                self.error(
                    span,
                    "hmac_signature credential is missing `auth.signature_header`",
                );
                None
            }
        };
        let timestamp_header = match raw.timestamp_header {
            Some(h) => Some(self.header_name("timestamp_header", h)?),
            None => None,
        };
        Some(HmacAuth {
            secret_name: secret_name?,
            secret: secret?,
            placeholder: placeholder?,
            algorithm: algorithm?,
            base64: base64?,
            message: message?,
            signature_header: signature_header?,
            timestamp_header,
            networking: networking?,
        })
    }

    fn required_networking(
        &mut self,
        kind: &str,
        raw: Option<Spanned<raw::RawNetworking>>,
        span: Range<usize>,
    ) -> Option<Networking> {
        match raw {
            Some(n) => self.networking(n),
            None => {
                self.error(
                    span,
                    format!("{kind} credential is missing `auth.networking`"),
                );
                None
            }
        }
    }

    /// Region or service names: lowercase letters, digits and `-`, as AWS spells them.
    fn names(
        &mut self,
        what: &str,
        raw: Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut ok = true;
        for name in raw.map(Spanned::into_inner).unwrap_or_default() {
            let valid = !name.get_ref().is_empty()
                && name
                    .get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if valid {
                out.push(name.into_inner());
            } else {
                self.error(
                    name.span(),
                    format!("`{what}` entries are AWS names like us-east-1 or s3: lowercase letters, digits and -"),
                );
                ok = false;
            }
        }
        ok.then_some(out)
    }

    fn header_name(&mut self, what: &str, raw: Spanned<String>) -> Option<http::HeaderName> {
        match http::HeaderName::from_bytes(raw.get_ref().as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.error(
                    raw.span(),
                    format!("`{what}` is not a valid HTTP header name"),
                );
                None
            }
        }
    }

    /// A message template names only the fields SPEC §11 lists.
    fn message_template(&mut self, raw: Spanned<String>) -> Option<String> {
        for field in template_fields(raw.get_ref()) {
            let known = MESSAGE_FIELDS.contains(&field)
                || field
                    .strip_prefix("header:")
                    .is_some_and(|h| http::HeaderName::from_bytes(h.as_bytes()).is_ok());
            if !known {
                self.error(
                    raw.span(),
                    format!("message names `{{{field}}}`: use {{method}} {{path}} {{host}} {{body}} {{timestamp}} or {{header:NAME}}"),
                );
                return None;
            }
        }
        Some(raw.into_inner())
    }
}

/// The `{…}` fields of a message template, in order.
pub fn template_fields(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(f, _)| f))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::vault::{Auth, HmacAlgorithm};

    fn parse(auth: &str) -> Result<Config, String> {
        let text = format!(
            "[[vaults]]\nid = \"vlt_s\"\n[[vaults.credentials]]\nid = \"vcrd_s\"\nauth = {{ {auth} }}\n"
        );
        Config::from_toml(&text, "k.toml", Path::new("/")).map_err(|e| {
            e.0.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    const NET: &str = "networking = { type = \"unrestricted\" }";

    #[test]
    fn an_aws_key_gets_a_stable_akia_placeholder_and_its_limits() {
        let c = parse(&format!(
            "type = \"aws_sigv4\", access_key_id = \"AKIAREAL\", secret_access_key = \"s3cret\", session_token = \"tok\", regions = [\"us-east-1\"], services = [\"s3\"], {NET}"
        ))
        .unwrap();
        let Auth::AwsSigv4(a) = &c.credentials().next().unwrap().auth else {
            panic!("aws_sigv4");
        };
        assert_eq!(
            a.placeholder,
            crate::vault::default_aws_placeholder("vcrd_s")
        );
        assert!(crate::vault::is_valid_aws_placeholder(&a.placeholder));
        assert_eq!(a.placeholder.len(), 20);
        assert_eq!(a.regions, ["us-east-1"]);
        assert!(a.session_token.is_some());
    }

    #[test]
    fn bad_aws_and_hmac_keys_are_named() {
        let cases = [
            (
                format!("type = \"aws_sigv4\", secret_access_key = \"s\", {NET}"),
                "access_key_id",
            ),
            (
                format!(
                    "type = \"aws_sigv4\", access_key_id = \"a\", secret_access_key = \"s\", regions = [\"US\"], {NET}"
                ),
                "regions",
            ),
            (
                format!(
                    "type = \"aws_sigv4\", access_key_id = \"a\", secret_access_key = \"s\", placeholder = \"short\", {NET}"
                ),
                "access key id",
            ),
            (
                format!(
                    "type = \"aws_sigv4\", access_key_id = \"a\", secret_access_key = \"s\", token = \"t\", {NET}"
                ),
                "`token` does not belong",
            ),
            (
                "type = \"aws_sigv4\", access_key_id = \"a\", secret_access_key = \"s\""
                    .to_string(),
                "networking",
            ),
            (
                format!(
                    "type = \"hmac_signature\", secret_name = \"S\", secret_value = \"v\", {NET}"
                ),
                "signature_header",
            ),
            (
                format!(
                    "type = \"hmac_signature\", secret_name = \"S\", secret_value = \"v\", signature_header = \"X-S\", algorithm = \"md5\", {NET}"
                ),
                "sha1, sha256 or sha512",
            ),
            (
                format!(
                    "type = \"hmac_signature\", secret_name = \"S\", secret_value = \"v\", signature_header = \"X-S\", encoding = \"b32\", {NET}"
                ),
                "hex or base64",
            ),
            (
                format!(
                    "type = \"hmac_signature\", secret_name = \"S\", secret_value = \"v\", signature_header = \"X-S\", message = \"{{nonce}}{{body}}\", {NET}"
                ),
                "{nonce}",
            ),
            (
                format!(
                    "type = \"hmac_signature\", secret_name = \"S\", secret_value = \"v\", signature_header = \"bad header\", {NET}"
                ),
                "signature_header",
            ),
        ];
        for (auth, needle) in cases {
            let e = parse(&auth).unwrap_err();
            assert!(e.contains(needle), "{auth}: {e}");
            assert!(!e.contains("s3cret"));
        }
    }

    #[test]
    fn an_hmac_credential_keeps_its_template() {
        let c = parse(&format!(
            "type = \"hmac_signature\", secret_name = \"EX\", secret_value = \"v\", algorithm = \"sha1\", encoding = \"base64\", message = \"{{method}}{{header:x-nonce}}\", signature_header = \"X-Sig\", timestamp_header = \"X-Ts\", {NET}"
        ))
        .unwrap();
        let Auth::HmacSignature(h) = &c.credentials().next().unwrap().auth else {
            panic!("hmac_signature");
        };
        assert_eq!(h.algorithm, HmacAlgorithm::Sha1);
        assert!(h.base64);
        assert_eq!(h.placeholder, "ks-ph-vcrd_s");
        assert_eq!(
            h.timestamp_header.as_ref().map(|h| h.as_str()),
            Some("x-ts")
        );
    }
}
