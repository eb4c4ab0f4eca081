//! The vault API routes (SPEC §6): each write edits the TOML document through [`Live::write`] and
//! answers with the object as the new store sees it.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::error::ApiError;
use super::params::{
    AuthUpdate, CredentialCreate, CredentialUpdate, ListQuery, VaultCreate, VaultUpdate,
};
use super::{document, objects};
use crate::config::Config;
use crate::live::Live;
use crate::vault::{Auth, Credential, Vault};

/// Length of the random part of generated ids (`vlt_` / `vcrd_` + 24 base62 characters).
const ID_RANDOM_CHARS: usize = 24;

pub struct Api {
    pub live: Arc<Live>,
    pub refresher: Arc<crate::oauth::Refresher>,
    /// Shown as the creation time of objects a hand-written file gives no time for.
    pub started: OffsetDateTime,
}

type Answer = Result<(StatusCode, Value), ApiError>;

impl Api {
    /// Dispatches `/v1/vaults…`; `segments` are the path parts after `/v1/vaults`.
    pub async fn route(
        &self,
        method: &Method,
        segments: &[&str],
        query: Option<&str>,
        body: &[u8],
    ) -> Answer {
        match (method, segments) {
            (&Method::POST, []) => self.create_vault(parse(body)?).await,
            (&Method::GET, []) => self.list_vaults(&list_query(query)?),
            (&Method::GET, [v]) => self.get_vault(v),
            (&Method::POST, [v]) => self.update_vault(v, parse(body)?).await,
            (&Method::DELETE, [v]) => self.delete_vault(v).await,
            (&Method::POST, [v, "archive"]) => self.archive_vault(v).await,
            (&Method::POST, [v, "credentials"]) => self.create_credential(v, parse(body)?).await,
            (&Method::GET, [v, "credentials"]) => self.list_credentials(v, &list_query(query)?),
            (&Method::GET, [v, "credentials", c]) => self.get_credential(v, c),
            (&Method::POST, [v, "credentials", c]) => {
                self.update_credential(v, c, parse(body)?).await
            }
            (&Method::DELETE, [v, "credentials", c]) => self.delete_credential(v, c).await,
            (&Method::POST, [v, "credentials", c, "archive"]) => {
                self.archive_credential(v, c).await
            }
            (&Method::POST, [v, "credentials", c, "mcp_oauth_validate"]) => {
                self.validate_credential(v, c).await
            }
            _ => Err(ApiError::not_found(
                "endpoint",
                &format!("{method} /v1/vaults/{}", segments.join("/")),
            )),
        }
    }

    fn config(&self) -> Arc<Config> {
        self.live.store().load().config().clone()
    }

    fn vault_json(&self, config: &Config, id: &str) -> Answer {
        let vault = find_vault(config, id)?;
        Ok((StatusCode::OK, objects::vault(vault, self.started)))
    }

    fn credential_json(&self, config: &Config, vault_id: &str, id: &str) -> Answer {
        let credential = find_credential(config, vault_id, id)?;
        Ok((
            StatusCode::OK,
            objects::credential(credential, self.started),
        ))
    }

    async fn create_vault(&self, p: VaultCreate) -> Answer {
        let id = new_id("vlt_");
        let now = now();
        self.live
            .write(|doc, _| {
                let mut t = toml_edit::Table::new();
                t.insert("id", toml_edit::value(&id));
                t.insert("display_name", toml_edit::value(&p.display_name));
                document::set_metadata(&mut t, &p.metadata);
                t.insert("created_at", toml_edit::value(&now));
                t.insert("updated_at", toml_edit::value(&now));
                document::vaults(doc)
                    .map(|v| v.push(t))
                    .ok_or_else(uneditable)
            })
            .await??;
        self.vault_json(&self.config(), &id)
    }

    fn list_vaults(&self, q: &ListQuery) -> Answer {
        let config = self.config();
        let vaults = config
            .vaults
            .iter()
            .filter(|v| q.include_archived || v.times.archived_at.is_none());
        page(
            vaults.rev(),
            q,
            |v| &v.id,
            |v| objects::vault(v, self.started),
        )
    }

    fn get_vault(&self, id: &str) -> Answer {
        self.vault_json(&self.config(), id)
    }

    async fn update_vault(&self, id: &str, p: VaultUpdate) -> Answer {
        let now = now();
        self.live
            .write(|doc, config| {
                find_vault(config, id)?;
                let t = document::vault(doc, id).ok_or_else(uneditable)?;
                // A vault always has a name: `null` leaves it as it is.
                if let Some(Some(name)) = &p.display_name {
                    t.insert("display_name", toml_edit::value(name));
                }
                if let Some(patch) = &p.metadata {
                    document::patch_metadata(t, patch);
                }
                t.insert("updated_at", toml_edit::value(&now));
                Ok::<_, ApiError>(())
            })
            .await??;
        self.vault_json(&self.config(), id)
    }

    async fn delete_vault(&self, id: &str) -> Answer {
        self.live
            .write(|doc, config| {
                find_vault(config, id)?;
                document::remove_vault(doc, id)
                    .then_some(())
                    .ok_or_else(uneditable)
            })
            .await??;
        Ok((StatusCode::OK, json!({ "id": id, "type": "vault_deleted" })))
    }

    async fn archive_vault(&self, id: &str) -> Answer {
        let now = now();
        self.live
            .write(|doc, config| {
                let archived = find_vault(config, id)?.times.archived_at.is_some();
                let t = document::vault(doc, id).ok_or_else(uneditable)?;
                if !archived {
                    t.insert("archived_at", toml_edit::value(&now));
                    t.insert("updated_at", toml_edit::value(&now));
                }
                Ok::<_, ApiError>(())
            })
            .await??;
        self.vault_json(&self.config(), id)
    }

    async fn create_credential(&self, vault_id: &str, p: CredentialCreate) -> Answer {
        let id = new_id("vcrd_");
        let now = now();
        self.live
            .write(|doc, config| {
                find_vault(config, vault_id)?;
                let table = document::new_credential(
                    &id,
                    p.display_name.as_deref(),
                    &p.metadata,
                    &p.auth,
                    &now,
                );
                let vault = document::vault(doc, vault_id).ok_or_else(uneditable)?;
                document::push_credential(vault, table)
                    .then_some(())
                    .ok_or_else(uneditable)
            })
            .await??;
        self.credential_json(&self.config(), vault_id, &id)
    }

    fn list_credentials(&self, vault_id: &str, q: &ListQuery) -> Answer {
        let config = self.config();
        let vault = find_vault(&config, vault_id)?;
        let credentials = vault
            .credentials
            .iter()
            .filter(|c| q.include_archived || c.times.archived_at.is_none());
        page(
            credentials.rev(),
            q,
            |c| &c.id,
            |c| objects::credential(c, self.started),
        )
    }

    fn get_credential(&self, vault_id: &str, id: &str) -> Answer {
        self.credential_json(&self.config(), vault_id, id)
    }

    async fn update_credential(&self, vault_id: &str, id: &str, p: CredentialUpdate) -> Answer {
        let now = now();
        self.live
            .write(|doc, config| {
                let stored = find_credential(config, vault_id, id)?;
                if let Some(auth) = &p.auth {
                    check_auth_update(&stored.auth, auth)?;
                }
                let t = document::credential(doc, vault_id, id).ok_or_else(uneditable)?;
                if let Some(name) = &p.display_name {
                    document::set_opt(t, "display_name", name.as_deref());
                }
                if let Some(patch) = &p.metadata {
                    document::patch_metadata(t, patch);
                }
                if let Some(auth) = &p.auth {
                    let table = t
                        .get_mut("auth")
                        .and_then(toml_edit::Item::as_table_like_mut)
                        .ok_or_else(uneditable)?;
                    document::update_auth(table, auth);
                }
                t.insert("updated_at", toml_edit::value(&now));
                Ok::<_, ApiError>(())
            })
            .await??;
        self.credential_json(&self.config(), vault_id, id)
    }

    async fn delete_credential(&self, vault_id: &str, id: &str) -> Answer {
        self.live
            .write(|doc, config| {
                find_credential(config, vault_id, id)?;
                document::remove_credential(doc, vault_id, id)
                    .then_some(())
                    .ok_or_else(uneditable)
            })
            .await??;
        Ok((
            StatusCode::OK,
            json!({ "id": id, "type": "vault_credential_deleted" }),
        ))
    }

    async fn archive_credential(&self, vault_id: &str, id: &str) -> Answer {
        let now = now();
        self.live
            .write(|doc, config| {
                let archived = find_credential(config, vault_id, id)?
                    .times
                    .archived_at
                    .is_some();
                let t = document::credential(doc, vault_id, id).ok_or_else(uneditable)?;
                if !archived {
                    t.insert("archived_at", toml_edit::value(&now));
                    t.insert("updated_at", toml_edit::value(&now));
                }
                Ok::<_, ApiError>(())
            })
            .await??;
        self.credential_json(&self.config(), vault_id, id)
    }

    /// Probes the MCP server with the stored token (refreshing once if it is refused).
    async fn validate_credential(&self, vault_id: &str, id: &str) -> Answer {
        let config = self.config();
        let credential = find_credential(&config, vault_id, id)?;
        if !matches!(credential.auth, Auth::McpOauth(_)) {
            return Err(ApiError::invalid(format!(
                "only mcp_oauth credentials can be validated; this one is `{}`",
                credential.auth.type_name()
            )));
        }
        let validation = crate::oauth::validate::validate(&self.refresher, vault_id, id)
            .await
            .ok_or_else(|| ApiError::not_found("credential", id))?;
        Ok((
            StatusCode::OK,
            objects::validation(vault_id, id, &validation, &now()),
        ))
    }
}

/// `auth.type` cannot change; `secret_name` and `mcp_server_url` are immutable.
fn check_auth_update(stored: &Auth, update: &AuthUpdate) -> Result<(), ApiError> {
    if stored.type_name() != update.type_name() {
        return Err(ApiError::invalid(format!(
            "auth.type cannot change: this credential is `{}`, the update says `{}`",
            stored.type_name(),
            update.type_name()
        )));
    }
    let immutable = |field: &str| Err(ApiError::invalid(format!("auth.{field} is immutable")));
    match (stored, update) {
        (
            Auth::EnvironmentVariable(s),
            AuthUpdate::EnvironmentVariable {
                secret_name: Some(n),
                ..
            },
        ) if *n != s.secret_name => immutable("secret_name"),
        (
            Auth::StaticBearer(s),
            AuthUpdate::StaticBearer {
                mcp_server_url: Some(u),
                ..
            },
        ) if *u != s.mcp_server_url => immutable("mcp_server_url"),
        (
            Auth::McpOauth(s),
            AuthUpdate::McpOauth {
                mcp_server_url: Some(u),
                ..
            },
        ) if *u != s.mcp_server_url => immutable("mcp_server_url"),
        (
            Auth::HmacSignature(s),
            AuthUpdate::HmacSignature {
                secret_name: Some(n),
                ..
            },
        ) if *n != s.secret_name => immutable("secret_name"),
        (
            Auth::McpOauth(s),
            AuthUpdate::McpOauth {
                refresh: Some(Some(_)),
                ..
            },
        ) if s.refresh.is_none() => Err(ApiError::invalid(
            "auth.refresh can only be updated on a credential created with refresh",
        )),
        _ => Ok(()),
    }
}

fn find_vault<'c>(config: &'c Config, id: &str) -> Result<&'c Vault, ApiError> {
    config
        .vaults
        .iter()
        .find(|v| v.id == id)
        .ok_or_else(|| ApiError::not_found("vault", id))
}

fn find_credential<'c>(
    config: &'c Config,
    vault_id: &str,
    id: &str,
) -> Result<&'c Credential, ApiError> {
    let vault = find_vault(config, vault_id)?;
    vault
        .credentials
        .iter()
        .find(|c| c.id == id)
        .ok_or_else(|| ApiError::not_found("credential", id))
}

/// The object exists in the configuration but not as a `[[vaults]]` / `[[vaults.credentials]]`
/// table keyswap can edit (e.g. an inline array written by hand).
fn uneditable() -> ApiError {
    ApiError::conflict(
        "this object is written in a form keyswap cannot edit; use [[vaults]] and [[vaults.credentials]] tables",
    )
}

/// One page of `items` (newest first), starting at the item whose id is the `page` cursor.
fn page<'a, T: 'a>(
    items: impl Iterator<Item = &'a T>,
    q: &ListQuery,
    id: impl Fn(&T) -> &String,
    render: impl Fn(&T) -> Value,
) -> Answer {
    let mut items = items.peekable();
    if let Some(cursor) = &q.page {
        while items.peek().is_some_and(|i| id(i) != cursor) {
            items.next();
        }
        if items.peek().is_none() {
            return Err(ApiError::invalid(
                "page is not a cursor this list returned (or its item is gone)",
            ));
        }
    }
    let data: Vec<Value> = items.by_ref().take(q.limit).map(&render).collect();
    let next_page = items.next().map(|i| id(i).clone());
    Ok((
        StatusCode::OK,
        json!({ "data": data, "next_page": next_page }),
    ))
}

fn list_query(query: Option<&str>) -> Result<ListQuery, ApiError> {
    ListQuery::parse(query).map_err(ApiError::invalid)
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(format!(
            "invalid request body: {}",
            // SECURITY: serde_json quotes the value it could not use, which may be a secret
            // sent in the wrong field or as a number; `without_values` masks it.
            crate::config::without_values(&e.to_string())
        ))
    })
}

fn now() -> String {
    let t = OffsetDateTime::now_utc();
    crate::vault::timestamp(
        t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
            .unwrap_or(t),
    )
}

/// `prefix` + 24 random base62 characters.
fn new_id(prefix: &str) -> String {
    use ring::rand::SecureRandom as _;
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let rng = ring::rand::SystemRandom::new();
    let mut id = String::with_capacity(prefix.len() + ID_RANDOM_CHARS);
    id.push_str(prefix);
    while id.len() < prefix.len() + ID_RANDOM_CHARS {
        let mut bytes = [0u8; 32];
        if rng.fill(&mut bytes).is_err() {
            continue;
        }
        // Rejection sampling keeps the characters uniform (248 = 4 × 62).
        for b in bytes.into_iter().filter(|&b| b < 248) {
            if id.len() < prefix.len() + ID_RANDOM_CHARS {
                id.push(ALPHABET[usize::from(b % 62)] as char);
            }
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_errors_never_echo_a_string_value() {
        let err = parse::<VaultCreate>(
            br#"{"display_name": "a", "metadata": "SECRET_in_the_wrong_field"}"#,
        )
        .err()
        .unwrap();
        assert!(!err.message.contains("SECRET"), "{}", err.message);
        assert!(err.message.contains("invalid type"), "{}", err.message);
        let err = parse::<VaultCreate>(br#"{"display_name": "a", "colour": 1}"#)
            .err()
            .unwrap();
        assert!(
            err.message.contains("colour"),
            "field names stay: {}",
            err.message
        );
    }

    #[test]
    fn ids_are_prefix_and_24_base62() {
        let id = new_id("vcrd_");
        assert_eq!(id.len(), 5 + 24);
        assert!(id[5..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(new_id("vlt_"), new_id("vlt_"));
    }
}
