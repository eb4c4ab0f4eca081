//! A credential's auth: the three types, and where each secret comes from (literal, `_env`,
//! `_file`). SECURITY: no message here repeats a secret or a value read from a variable or file.

use std::ops::Range;

use toml::Spanned;
use zeroize::Zeroizing;

use crate::secret::Secret;
use crate::vault::{self, Auth, BearerAuth, EnvVarAuth, Injection, OauthAuth};

use super::diagnostics::line_column;
use super::{MAX_SECRET_BYTES, Position, Validator, raw, strip_one_newline};

impl Validator<'_> {
    pub(super) fn auth(
        &mut self,
        credential_id: &str,
        raw: Spanned<raw::RawAuth>,
        outer: Range<usize>,
    ) -> Option<Auth> {
        let span = raw.span();
        let raw = raw.into_inner();
        let Some(kind) = raw.r#type.as_ref() else {
            self.error(outer, "credential is missing `auth.type`");
            return None;
        };
        let kind_span = kind.span();
        let allowed: &[&str] = match kind.get_ref().as_str() {
            "environment_variable" => &[
                "secret_name",
                "secret_value",
                "secret_value_env",
                "secret_value_file",
                "networking",
                "injection_location",
                "placeholder",
            ],
            "static_bearer" => &["mcp_server_url", "token", "token_env", "token_file"],
            "mcp_oauth" => &[
                "mcp_server_url",
                "access_token",
                "access_token_env",
                "access_token_file",
                "expires_at",
                "refresh",
            ],
            "aws_sigv4" => &[
                "access_key_id",
                "access_key_id_env",
                "access_key_id_file",
                "secret_access_key",
                "secret_access_key_env",
                "secret_access_key_file",
                "session_token",
                "session_token_env",
                "session_token_file",
                "networking",
                "regions",
                "services",
                "placeholder",
            ],
            "hmac_signature" => &[
                "secret_name",
                "secret_value",
                "secret_value_env",
                "secret_value_file",
                "placeholder",
                "algorithm",
                "encoding",
                "message",
                "signature_header",
                "timestamp_header",
                "networking",
            ],
            other => {
                self.error(kind_span, format!("unknown auth.type `{other}`: use environment_variable, static_bearer, mcp_oauth, aws_sigv4 or hmac_signature"));
                return None;
            }
        };
        for (key, key_span) in raw.present_keys() {
            if !allowed.contains(&key) {
                self.error(
                    key_span,
                    format!(
                        "`{key}` does not belong to a `{}` credential",
                        kind.get_ref()
                    ),
                );
            }
        }
        match kind.get_ref().as_str() {
            "environment_variable" => self
                .env_var_auth(credential_id, raw, span)
                .map(Auth::EnvironmentVariable),
            "aws_sigv4" => self
                .aws_sigv4_auth(credential_id, raw, span)
                .map(Auth::AwsSigv4),
            "hmac_signature" => self
                .hmac_auth(credential_id, raw, span)
                .map(Auth::HmacSignature),
            "static_bearer" => {
                let mcp_server_url = self.mcp_url(raw.mcp_server_url, span.clone())?;
                let token =
                    self.secret_source("token", raw.token, raw.token_env, raw.token_file, span)?;
                Some(Auth::StaticBearer(BearerAuth {
                    mcp_server_url,
                    token,
                }))
            }
            "mcp_oauth" => {
                let mcp_server_url = self.mcp_url(raw.mcp_server_url, span.clone())?;
                let access_token = self.secret_source(
                    "access_token",
                    raw.access_token,
                    raw.access_token_env,
                    raw.access_token_file,
                    span,
                )?;
                let refresh = match raw.refresh {
                    Some(r) => Some(self.refresh(r)?),
                    None => None,
                };
                Some(Auth::McpOauth(OauthAuth {
                    mcp_server_url,
                    access_token,
                    expires_at: raw.expires_at.and_then(|t| self.timestamp(t)),
                    refresh,
                }))
            }
            _ => None,
        }
    }

    pub(super) fn env_var_auth(
        &mut self,
        credential_id: &str,
        raw: raw::RawAuth,
        span: Range<usize>,
    ) -> Option<EnvVarAuth> {
        let secret_name =
            self.secret_name("environment_variable", raw.secret_name, span.clone())?;
        let secret = self.secret_source(
            "secret_value",
            raw.secret_value,
            raw.secret_value_env,
            raw.secret_value_file,
            span.clone(),
        );
        let networking = match raw.networking {
            Some(n) => self.networking(n),
            None => {
                self.error(
                    span,
                    "environment_variable credential is missing `auth.networking`",
                );
                None
            }
        };
        let injection = match raw.injection_location {
            Some(i) => {
                let s = i.span();
                let i = i.into_inner();
                let injection = Injection {
                    header: i.header.unwrap_or(true),
                    body: i.body.unwrap_or(false),
                    query: i.query.unwrap_or(false),
                };
                if !(injection.header || injection.body || injection.query) {
                    self.error(
                        s,
                        "injection_location must keep at least one of header, body, query true",
                    );
                }
                injection
            }
            None => Injection::default(),
        };
        let placeholder = self.placeholder(raw.placeholder, credential_id)?;
        Some(EnvVarAuth {
            secret_name,
            secret: secret?,
            networking: networking?,
            injection,
            placeholder,
        })
    }

    /// `auth.secret_name`: the variable `keyswap env` prints the placeholder as.
    pub(super) fn secret_name(
        &mut self,
        kind: &str,
        raw: Option<Spanned<String>>,
        span: Range<usize>,
    ) -> Option<String> {
        match raw {
            Some(name) if vault::is_valid_secret_name(name.get_ref()) => Some(name.into_inner()),
            Some(name) => {
                self.error(
                    name.span(),
                    format!(
                        "secret_name `{}` must match ^[A-Za-z_][A-Za-z0-9_]*$",
                        name.get_ref()
                    ),
                );
                None
            }
            None => {
                self.error(
                    span,
                    format!("{kind} credential is missing `auth.secret_name`"),
                );
                None
            }
        }
    }

    /// `auth.placeholder`, or the default `ks-ph-` + the credential id.
    pub(super) fn placeholder(
        &mut self,
        raw: Option<Spanned<String>>,
        credential_id: &str,
    ) -> Option<String> {
        match raw {
            Some(p) if vault::is_valid_placeholder(p.get_ref()) => Some(p.into_inner()),
            Some(p) => {
                self.error(
                    p.span(),
                    "placeholder must be 8 to 256 characters from [A-Za-z0-9._~-]",
                );
                None
            }
            None => Some(vault::default_placeholder(credential_id)),
        }
    }

    /// Exactly one of a literal value, an environment variable or a file.
    pub(super) fn secret_source(
        &mut self,
        what: &str,
        literal: Option<Spanned<String>>,
        env: Option<Spanned<String>>,
        file: Option<Spanned<String>>,
        span: Range<usize>,
    ) -> Option<Secret> {
        let count = literal.is_some() as u8 + env.is_some() as u8 + file.is_some() as u8;
        if count != 1 {
            self.error(
                span,
                format!("give exactly one of `{what}`, `{what}_env`, `{what}_file`"),
            );
            return None;
        }
        let (value, span) = if let Some(l) = literal {
            let span = l.span();
            if self.literal_secret.is_none() {
                let (line, column) = line_column(self.text, span.start);
                self.literal_secret = Some(Position {
                    key: what.to_string(),
                    line,
                    column,
                });
            }
            (l.into_inner(), span)
        } else if let Some(e) = env {
            // SECURITY: the variable's name is not repeated in errors: a token pasted into
            // `…_env` by mistake would otherwise land in logs and on `/healthz`.
            match std::env::var(e.get_ref()) {
                Ok(v) => (v, e.span()),
                Err(_) => {
                    self.error(
                        e.span(),
                        format!("`{what}_env`: the environment variable it names is not set"),
                    );
                    return None;
                }
            }
        } else {
            let f = file?;
            let path = self.path(f.get_ref());
            match std::fs::read_to_string(&path) {
                // A file written by `echo` ends in a newline that is not part of the secret.
                Ok(v) => (strip_one_newline(v), f.span()),
                // SECURITY: nor is the path (same reason); the I/O error's text carries no path.
                Err(e) => {
                    self.error(
                        f.span(),
                        format!("`{what}_file`: cannot read the file it names: {e}"),
                    );
                    return None;
                }
            }
        };
        let value = Zeroizing::new(value);
        if value.len() > MAX_SECRET_BYTES {
            self.error(
                span.clone(),
                format!("`{what}` is longer than {MAX_SECRET_BYTES} bytes"),
            );
            return None;
        }
        if value.is_empty() {
            self.error(span, format!("`{what}` is empty"));
            return None;
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            self.error(span, format!("`{what}` contains control characters (CR, LF, NUL…), which no HTTP header can carry"));
            return None;
        }
        Some(Secret::new(value.as_bytes()))
    }
}
