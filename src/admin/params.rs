//! Request bodies of the vault API. Fields that may be sent as `null` to clear a value are
//! `Option<Option<T>>`: absent (keep) is not the same as `null` (clear).
//!
//! None of these types derives `Debug`: several carry secrets.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// Distinguishes a field sent as `null` (`Some(None)`) from one left out (`None`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultCreate {
    pub display_name: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultUpdate {
    #[serde(default, deserialize_with = "nullable")]
    pub display_name: Option<Option<String>>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, Option<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialCreate {
    pub auth: AuthCreate,
    pub display_name: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialUpdate {
    pub auth: Option<AuthUpdate>,
    #[serde(default, deserialize_with = "nullable")]
    pub display_name: Option<Option<String>>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, Option<String>>>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthCreate {
    EnvironmentVariable {
        secret_name: String,
        secret_value: String,
        networking: NetworkingParam,
        injection_location: Option<InjectionParam>,
        /// keyswap's extension: a placeholder of the operator's choosing.
        placeholder: Option<String>,
    },
    StaticBearer {
        token: String,
        mcp_server_url: String,
    },
    McpOauth {
        access_token: String,
        mcp_server_url: String,
        expires_at: Option<String>,
        refresh: Option<RefreshCreate>,
    },
    AwsSigv4 {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        networking: NetworkingParam,
        regions: Option<Vec<String>>,
        services: Option<Vec<String>>,
        placeholder: Option<String>,
    },
    HmacSignature {
        secret_name: String,
        secret_value: String,
        placeholder: Option<String>,
        algorithm: Option<String>,
        encoding: Option<String>,
        message: Option<String>,
        signature_header: String,
        timestamp_header: Option<String>,
        networking: NetworkingParam,
    },
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthUpdate {
    EnvironmentVariable {
        secret_name: Option<String>,
        secret_value: Option<String>,
        networking: Option<NetworkingParam>,
        injection_location: Option<InjectionParam>,
    },
    StaticBearer {
        token: Option<String>,
        mcp_server_url: Option<String>,
    },
    McpOauth {
        access_token: Option<String>,
        mcp_server_url: Option<String>,
        #[serde(default, deserialize_with = "nullable")]
        expires_at: Option<Option<String>>,
        #[serde(default, deserialize_with = "nullable")]
        refresh: Option<Option<RefreshUpdate>>,
    },
    AwsSigv4 {
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        #[serde(default, deserialize_with = "nullable")]
        session_token: Option<Option<String>>,
        networking: Option<NetworkingParam>,
        regions: Option<Vec<String>>,
        services: Option<Vec<String>>,
    },
    HmacSignature {
        secret_name: Option<String>,
        secret_value: Option<String>,
        algorithm: Option<String>,
        encoding: Option<String>,
        message: Option<String>,
        signature_header: Option<String>,
        #[serde(default, deserialize_with = "nullable")]
        timestamp_header: Option<Option<String>>,
        networking: Option<NetworkingParam>,
    },
}

impl AuthUpdate {
    pub fn type_name(&self) -> &'static str {
        match self {
            AuthUpdate::EnvironmentVariable { .. } => "environment_variable",
            AuthUpdate::StaticBearer { .. } => "static_bearer",
            AuthUpdate::McpOauth { .. } => "mcp_oauth",
            AuthUpdate::AwsSigv4 { .. } => "aws_sigv4",
            AuthUpdate::HmacSignature { .. } => "hmac_signature",
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NetworkingParam {
    Unrestricted,
    Limited { allowed_hosts: Vec<String> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectionParam {
    pub header: Option<bool>,
    pub body: Option<bool>,
    pub query: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshCreate {
    pub client_id: String,
    pub refresh_token: String,
    pub token_endpoint: String,
    pub token_endpoint_auth: TokenAuthParam,
    pub resource: Option<String>,
    pub scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshUpdate {
    pub refresh_token: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub scope: Option<Option<String>>,
    pub token_endpoint_auth: Option<TokenAuthParam>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenAuthParam {
    None,
    ClientSecretBasic { client_secret: Option<String> },
    ClientSecretPost { client_secret: Option<String> },
}

/// `?limit=&page=&include_archived=` of the list endpoints (other keys, like the SDK's `beta`, ignored).
pub struct ListQuery {
    pub limit: usize,
    pub page: Option<String>,
    pub include_archived: bool,
}

impl ListQuery {
    pub fn parse(query: Option<&str>) -> Result<ListQuery, String> {
        let mut out = ListQuery {
            limit: 20,
            page: None,
            include_archived: false,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "limit" => {
                    out.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or("limit must be an integer from 1 to 100")?;
                }
                "page" => out.page = Some(percent_decode(value)),
                "include_archived" => {
                    out.include_archived = match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err("include_archived must be true or false".into()),
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_absent_are_different() {
        let u: CredentialUpdate = serde_json::from_str(r#"{"display_name": null}"#).unwrap();
        assert!(matches!(u.display_name, Some(None)));
        let u: CredentialUpdate = serde_json::from_str(r#"{}"#).unwrap();
        assert!(u.display_name.is_none());
        let u: CredentialUpdate =
            serde_json::from_str(r#"{"auth": {"type": "mcp_oauth", "refresh": null}}"#).unwrap();
        assert!(matches!(
            u.auth,
            Some(AuthUpdate::McpOauth {
                refresh: Some(None),
                ..
            })
        ));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(
            serde_json::from_str::<VaultCreate>(r#"{"display_name": "a", "colour": 1}"#).is_err()
        );
        let bad = r#"{"auth": {"type": "environment_variable", "secret_name": "A", "secret_value": "v", "networking": {"type": "unrestricted"}, "oops": 1}}"#;
        assert!(serde_json::from_str::<CredentialCreate>(bad).is_err());
    }

    #[test]
    fn list_query() {
        let q =
            ListQuery::parse(Some("beta=true&limit=5&page=vcrd_x&include_archived=true")).unwrap();
        assert_eq!(
            (q.limit, q.page.as_deref(), q.include_archived),
            (5, Some("vcrd_x"), true)
        );
        assert!(ListQuery::parse(Some("limit=0")).is_err());
        assert!(ListQuery::parse(Some("limit=101")).is_err());
        assert_eq!(ListQuery::parse(None).unwrap().limit, 20);
    }
}
