//! `mcp_oauth` settings: the MCP server URL, the token endpoint and how keyswap authenticates
//! to it when refreshing.

use std::ops::Range;

use toml::Spanned;

use crate::vault::{OauthRefresh, TokenEndpointAuth};

use super::{Validator, raw};

impl Validator<'_> {
    pub(super) fn mcp_url(
        &mut self,
        url: Option<Spanned<String>>,
        span: Range<usize>,
    ) -> Option<String> {
        let Some(url) = url else {
            self.error(span, "credential is missing `auth.mcp_server_url`");
            return None;
        };
        self.https_url("mcp_server_url", url)
    }

    /// MCP servers and token endpoints receive tokens: only over TLS.
    pub(super) fn https_url(&mut self, key: &str, url: Spanned<String>) -> Option<String> {
        match url.get_ref().parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => {
                Some(url.into_inner())
            }
            _ => {
                self.error(url.span(), format!("{key} must be an https:// URL"));
                None
            }
        }
    }

    /// `https://`, or `http://` on this machine's loopback (a local authorization server, as
    /// RFC 8252 allows for loopback redirects): refresh tokens never cross a network in clear.
    pub(super) fn token_endpoint(&mut self, url: Spanned<String>) -> Option<String> {
        let loopback_http = url.get_ref().parse::<http::Uri>().is_ok_and(|u| {
            u.scheme_str() == Some("http")
                && u.host().is_some_and(|h| {
                    let h = h.trim_start_matches('[').trim_end_matches(']');
                    h.eq_ignore_ascii_case("localhost")
                        || h.parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback())
                })
        });
        if loopback_http {
            return Some(url.into_inner());
        }
        match url.get_ref().parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => {
                Some(url.into_inner())
            }
            _ => {
                self.error(
                    url.span(),
                    "token_endpoint must be an https:// URL (or http:// on 127.0.0.1, [::1] or localhost)",
                );
                None
            }
        }
    }

    pub(super) fn refresh(&mut self, raw: Spanned<raw::RawRefresh>) -> Option<OauthRefresh> {
        let span = raw.span();
        let raw = raw.into_inner();
        let refresh_token = self.secret_source(
            "refresh_token",
            raw.refresh_token,
            raw.refresh_token_env,
            None,
            span.clone(),
        );
        let token_endpoint_auth = match raw.token_endpoint_auth {
            None => TokenEndpointAuth::None,
            Some(a) => self.token_endpoint_auth(a)?,
        };
        let token_endpoint = self.token_endpoint(raw.token_endpoint);
        Some(OauthRefresh {
            client_id: raw.client_id.into_inner(),
            refresh_token: refresh_token?,
            token_endpoint: token_endpoint?,
            token_endpoint_auth,
            scope: raw.scope,
            resource: raw.resource,
        })
    }

    pub(super) fn token_endpoint_auth(
        &mut self,
        raw: Spanned<raw::RawTokenEndpointAuth>,
    ) -> Option<TokenEndpointAuth> {
        let span = raw.span();
        let raw = raw.into_inner();
        let kind = raw.r#type.get_ref().as_str();
        if kind == "none" {
            return Some(TokenEndpointAuth::None);
        }
        if !matches!(kind, "client_secret_basic" | "client_secret_post") {
            self.error(raw.r#type.span(), format!("unknown token_endpoint_auth type `{kind}`: use none, client_secret_basic or client_secret_post"));
            return None;
        }
        let secret = self.secret_source(
            "client_secret",
            raw.client_secret,
            raw.client_secret_env,
            None,
            span,
        )?;
        Some(if kind == "client_secret_basic" {
            TokenEndpointAuth::ClientSecretBasic(secret)
        } else {
            TokenEndpointAuth::ClientSecretPost(secret)
        })
    }
}
