//! The API's view of vaults and credentials: exactly the objects of the Managed Agents docs, with
//! every secret left out (`secret_value`, `token`, `access_token`, `refresh_token`, `client_secret`).

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::vault::{Auth, Credential, Networking, TokenEndpointAuth, Vault, timestamp};

fn time_or(t: Option<OffsetDateTime>, fallback: OffsetDateTime) -> String {
    timestamp(t.unwrap_or(fallback))
}

/// A vault object. Times missing from a hand-written file show as `fallback` (keyswap's start).
pub fn vault(v: &Vault, fallback: OffsetDateTime) -> Value {
    json!({
        "id": v.id,
        "type": "vault",
        "display_name": v.display_name.as_deref().unwrap_or(&v.id),
        "metadata": v.metadata,
        "created_at": time_or(v.times.created_at, fallback),
        "updated_at": time_or(v.times.updated_at.or(v.times.created_at), fallback),
        "archived_at": v.times.archived_at.map(timestamp),
    })
}

/// A credential object, secrets stripped.
pub fn credential(c: &Credential, fallback: OffsetDateTime) -> Value {
    json!({
        "id": c.id,
        "type": "vault_credential",
        "vault_id": c.vault_id,
        "display_name": c.display_name,
        "metadata": c.metadata,
        "auth": auth(&c.auth),
        "created_at": time_or(c.times.created_at, fallback),
        "updated_at": time_or(c.times.updated_at.or(c.times.created_at), fallback),
        "archived_at": c.times.archived_at.map(timestamp),
    })
}

fn networking(n: &Networking) -> Value {
    match n {
        Networking::Unrestricted => json!({ "type": "unrestricted" }),
        Networking::Limited { allowed_hosts, .. } => {
            json!({ "type": "limited", "allowed_hosts": allowed_hosts })
        }
    }
}

/// SECURITY: no secret is ever in it; for `aws_sigv4` that includes the access key id.
fn auth(a: &Auth) -> Value {
    match a {
        Auth::AwsSigv4(aws) => json!({
            "type": "aws_sigv4",
            "networking": networking(&aws.networking),
            "regions": aws.regions,
            "services": aws.services,
            "placeholder": aws.placeholder,
        }),
        Auth::HmacSignature(h) => json!({
            "type": "hmac_signature",
            "secret_name": h.secret_name,
            "placeholder": h.placeholder,
            "algorithm": h.algorithm.name(),
            "encoding": if h.base64 { "base64" } else { "hex" },
            "message": h.message,
            "signature_header": h.signature_header.as_str(),
            "timestamp_header": h.timestamp_header.as_ref().map(http::HeaderName::as_str),
            "networking": networking(&h.networking),
        }),
        Auth::EnvironmentVariable(e) => json!({
            "type": "environment_variable",
            "secret_name": e.secret_name,
            "networking": networking(&e.networking),
            "injection_location": { "header": e.injection.header, "body": e.injection.body, "query": e.injection.query },
            "placeholder": e.placeholder,
        }),
        Auth::StaticBearer(b) => {
            json!({ "type": "static_bearer", "mcp_server_url": b.mcp_server_url })
        }
        Auth::McpOauth(o) => json!({
            "type": "mcp_oauth",
            "mcp_server_url": o.mcp_server_url,
            "expires_at": o.expires_at.map(timestamp),
            "refresh": o.refresh.as_ref().map(|r| json!({
                "client_id": r.client_id,
                "token_endpoint": r.token_endpoint,
                "token_endpoint_auth": { "type": match r.token_endpoint_auth {
                    TokenEndpointAuth::None => "none",
                    TokenEndpointAuth::ClientSecretBasic(_) => "client_secret_basic",
                    TokenEndpointAuth::ClientSecretPost(_) => "client_secret_post",
                } },
                "scope": r.scope,
                "resource": r.resource,
            })),
        }),
    }
}

/// A `vault_credential_validation` object.
pub fn validation(
    vault_id: &str,
    credential_id: &str,
    v: &crate::oauth::validate::Validation,
    validated_at: &str,
) -> Value {
    let http = |c: &Option<crate::oauth::Captured>| {
        c.as_ref().map(|c| {
            json!({
                "status_code": c.status_code,
                "content_type": c.content_type,
                "body": c.body,
                "body_truncated": c.body_truncated,
            })
        })
    };
    json!({
        "type": "vault_credential_validation",
        "credential_id": credential_id,
        "vault_id": vault_id,
        "status": v.status,
        "has_refresh_token": v.has_refresh_token,
        "validated_at": validated_at,
        "mcp_probe": v.mcp_probe.as_ref().map(|p| json!({
            "method": p.method,
            "http_response": http(&p.http_response),
        })),
        "refresh": v.refresh.as_ref().map(|r| json!({
            "status": r.status,
            "http_response": http(&r.http_response),
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn no_secret_is_ever_rendered() {
        let text = r#"
[[vaults]]
id = "vlt_a"
[[vaults.credentials]]
id = "vcrd_e"
auth = { type = "environment_variable", secret_name = "E", secret_value = "SECRET_e", networking = { type = "limited", allowed_hosts = ["a.test"] } }
[[vaults.credentials]]
id = "vcrd_s"
auth = { type = "static_bearer", mcp_server_url = "https://mcp.test/", token = "SECRET_s" }
[[vaults.credentials]]
id = "vcrd_o"
auth = { type = "mcp_oauth", mcp_server_url = "https://mcp.test/", access_token = "SECRET_a", refresh = { client_id = "c", refresh_token = "SECRET_r", token_endpoint = "https://auth.test/t", token_endpoint_auth = { type = "client_secret_basic", client_secret = "SECRET_c" } } }
"#;
        let config = Config::from_toml(text, "t", Path::new("")).unwrap();
        let now = OffsetDateTime::now_utc();
        let rendered: Vec<String> = config
            .credentials()
            .map(|c| credential(c, now).to_string())
            .collect();
        for r in &rendered {
            assert!(!r.contains("SECRET"), "{r}");
        }
        assert!(
            rendered[0].contains(r#""allowed_hosts":["a.test"]"#),
            "{}",
            rendered[0]
        );
        assert!(
            rendered[2].contains(r#""token_endpoint_auth":{"type":"client_secret_basic"}"#),
            "{}",
            rendered[2]
        );
        assert_eq!(vault(&config.vaults[0], now)["display_name"], "vlt_a");
    }
}
