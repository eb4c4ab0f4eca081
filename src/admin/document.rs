//! Edits of the operator's TOML document for the vault API, with `toml_edit` so comments, order and
//! layout survive. Every function here changes the document only; `Live::write` validates the
//! result with the same rules as a hand edit before anything is persisted.

use std::collections::BTreeMap;

use toml_edit::{
    Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, TableLike, Value, value,
};

use super::params::{AuthCreate, AuthUpdate, InjectionParam, NetworkingParam, TokenAuthParam};

/// The `[[vaults]]` array, created when the file has none yet.
pub fn vaults(doc: &mut DocumentMut) -> Option<&mut ArrayOfTables> {
    if !doc.contains_key("vaults") {
        doc.insert("vaults", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    doc.get_mut("vaults")?.as_array_of_tables_mut()
}

fn has_id(table: &Table, id: &str) -> bool {
    table.get("id").and_then(Item::as_str) == Some(id)
}

pub fn vault<'d>(doc: &'d mut DocumentMut, id: &str) -> Option<&'d mut Table> {
    vaults(doc)?.iter_mut().find(|t| has_id(t, id))
}

pub fn remove_vault(doc: &mut DocumentMut, id: &str) -> bool {
    let Some(vaults) = vaults(doc) else {
        return false;
    };
    let found = vaults.iter().position(|t| has_id(t, id));
    match found {
        Some(i) => {
            vaults.remove(i);
            true
        }
        None => false,
    }
}

fn credentials(vault: &mut Table) -> Option<&mut ArrayOfTables> {
    if !vault.contains_key("credentials") {
        vault.insert("credentials", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    vault.get_mut("credentials")?.as_array_of_tables_mut()
}

pub fn push_credential(vault: &mut Table, table: Table) -> bool {
    credentials(vault).map(|c| c.push(table)).is_some()
}

pub fn credential<'d>(doc: &'d mut DocumentMut, vault_id: &str, id: &str) -> Option<&'d mut Table> {
    credentials(vault(doc, vault_id)?)?
        .iter_mut()
        .find(|t| has_id(t, id))
}

pub fn remove_credential(doc: &mut DocumentMut, vault_id: &str, id: &str) -> bool {
    let Some(list) = vault(doc, vault_id).and_then(credentials) else {
        return false;
    };
    let found = list.iter().position(|t| has_id(t, id));
    match found {
        Some(i) => {
            list.remove(i);
            true
        }
        None => false,
    }
}

/// Applies a metadata patch: strings upsert, `null` deletes, other keys stay.
pub fn patch_metadata(table: &mut Table, patch: &BTreeMap<String, Option<String>>) {
    let mut current: BTreeMap<String, String> = table
        .get("metadata")
        .and_then(Item::as_table_like)
        .map(|t| {
            t.iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in patch {
        match v {
            Some(v) => current.insert(k.clone(), v.clone()),
            None => current.remove(k),
        };
    }
    set_metadata(table, &current);
}

pub fn set_metadata(table: &mut Table, metadata: &BTreeMap<String, String>) {
    if metadata.is_empty() {
        table.remove("metadata");
        return;
    }
    let mut inline = InlineTable::new();
    for (k, v) in metadata {
        inline.insert(k, Value::from(v.as_str()));
    }
    table.insert("metadata", value(inline));
}

/// Sets or removes a string key.
pub fn set_opt(table: &mut dyn TableLike, key: &str, v: Option<&str>) {
    match v {
        Some(v) => {
            table.insert(key, value(v));
        }
        None => {
            table.remove(key);
        }
    }
}

/// A secret value goes in as a literal; any `_env` / `_file` source it replaces is removed.
pub fn set_secret(auth: &mut dyn TableLike, key: &str, secret: &str) {
    auth.remove(&format!("{key}_env"));
    auth.remove(&format!("{key}_file"));
    auth.insert(key, value(secret));
}

fn networking(n: &NetworkingParam) -> Value {
    let mut t = InlineTable::new();
    match n {
        NetworkingParam::Unrestricted => {
            t.insert("type", "unrestricted".into());
        }
        NetworkingParam::Limited { allowed_hosts } => {
            t.insert("type", "limited".into());
            t.insert(
                "allowed_hosts",
                Value::Array(allowed_hosts.iter().map(String::as_str).collect::<Array>()),
            );
        }
    }
    Value::InlineTable(t)
}

fn injection(auth: &mut dyn TableLike, p: &InjectionParam) {
    let mut t = auth
        .get("injection_location")
        .and_then(Item::as_table_like)
        .map_or_else(InlineTable::new, |t| {
            t.iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.as_value()?.clone())))
                .collect()
        });
    for (key, v) in [("header", p.header), ("body", p.body), ("query", p.query)] {
        if let Some(v) = v {
            t.insert(key, v.into());
        }
    }
    auth.insert("injection_location", value(t));
}

fn token_auth(p: &TokenAuthParam, existing: Option<&dyn TableLike>) -> InlineTable {
    let mut t = InlineTable::new();
    let (kind, secret) = match p {
        TokenAuthParam::None => ("none", None),
        TokenAuthParam::ClientSecretBasic { client_secret } => {
            ("client_secret_basic", client_secret.as_deref())
        }
        TokenAuthParam::ClientSecretPost { client_secret } => {
            ("client_secret_post", client_secret.as_deref())
        }
    };
    t.insert("type", kind.into());
    if kind != "none" {
        // Switching between basic and post keeps the stored secret unless a new one is sent.
        let kept = existing
            .and_then(|e| e.get("client_secret"))
            .and_then(Item::as_str);
        if let Some(secret) = secret.or(kept) {
            t.insert("client_secret", secret.into());
        }
    }
    t
}

/// The `[[vaults.credentials]]` table of a new credential.
pub fn new_credential(
    id: &str,
    display_name: Option<&str>,
    metadata: &BTreeMap<String, String>,
    auth: &AuthCreate,
    now: &str,
) -> Table {
    let mut t = Table::new();
    t.insert("id", value(id));
    set_opt(&mut t, "display_name", display_name);
    set_metadata(&mut t, metadata);
    t.insert("created_at", value(now));
    t.insert("updated_at", value(now));
    let mut a = InlineTable::new();
    match auth {
        AuthCreate::EnvironmentVariable {
            secret_name,
            secret_value,
            networking: n,
            injection_location,
            placeholder,
        } => {
            a.insert("type", "environment_variable".into());
            a.insert("secret_name", secret_name.as_str().into());
            a.insert("secret_value", secret_value.as_str().into());
            a.insert("networking", networking(n));
            if let Some(p) = placeholder {
                a.insert("placeholder", p.as_str().into());
            }
            if let Some(i) = injection_location {
                injection(&mut a, i);
            }
        }
        AuthCreate::StaticBearer {
            token,
            mcp_server_url,
        } => {
            a.insert("type", "static_bearer".into());
            a.insert("mcp_server_url", mcp_server_url.as_str().into());
            a.insert("token", token.as_str().into());
        }
        AuthCreate::AwsSigv4 { .. } | AuthCreate::HmacSignature { .. } => {
            signing_auth(&mut a, auth);
        }
        AuthCreate::McpOauth {
            access_token,
            mcp_server_url,
            expires_at,
            refresh,
        } => {
            a.insert("type", "mcp_oauth".into());
            a.insert("mcp_server_url", mcp_server_url.as_str().into());
            a.insert("access_token", access_token.as_str().into());
            if let Some(e) = expires_at {
                a.insert("expires_at", e.as_str().into());
            }
            if let Some(r) = refresh {
                let mut rt = InlineTable::new();
                rt.insert("client_id", r.client_id.as_str().into());
                rt.insert("refresh_token", r.refresh_token.as_str().into());
                rt.insert("token_endpoint", r.token_endpoint.as_str().into());
                rt.insert(
                    "token_endpoint_auth",
                    Value::InlineTable(token_auth(&r.token_endpoint_auth, None)),
                );
                for (k, v) in [("scope", &r.scope), ("resource", &r.resource)] {
                    if let Some(v) = v {
                        rt.insert(k, v.as_str().into());
                    }
                }
                a.insert("refresh", Value::InlineTable(rt));
            }
        }
    }
    t.insert("auth", value(a));
    t
}

/// The two signing types (SPEC §11), created: their keys as given.
fn signing_auth(a: &mut InlineTable, auth: &AuthCreate) {
    match auth {
        AuthCreate::AwsSigv4 {
            access_key_id,
            secret_access_key,
            session_token,
            networking: n,
            regions,
            services,
            placeholder,
        } => {
            a.insert("type", "aws_sigv4".into());
            a.insert("access_key_id", access_key_id.as_str().into());
            a.insert("secret_access_key", secret_access_key.as_str().into());
            if let Some(t) = session_token {
                a.insert("session_token", t.as_str().into());
            }
            a.insert("networking", networking(n));
            for (key, names) in [("regions", regions), ("services", services)] {
                if let Some(names) = names {
                    a.insert(key, strings(names));
                }
            }
            if let Some(p) = placeholder {
                a.insert("placeholder", p.as_str().into());
            }
        }
        AuthCreate::HmacSignature {
            secret_name,
            secret_value,
            placeholder,
            algorithm,
            encoding,
            message,
            signature_header,
            timestamp_header,
            networking: n,
        } => {
            a.insert("type", "hmac_signature".into());
            a.insert("secret_name", secret_name.as_str().into());
            a.insert("secret_value", secret_value.as_str().into());
            for (key, v) in [
                ("placeholder", placeholder),
                ("algorithm", algorithm),
                ("encoding", encoding),
                ("message", message),
                ("timestamp_header", timestamp_header),
            ] {
                if let Some(v) = v {
                    a.insert(key, v.as_str().into());
                }
            }
            a.insert("signature_header", signature_header.as_str().into());
            a.insert("networking", networking(n));
        }
        _ => {}
    }
}

fn strings(names: &[String]) -> Value {
    Value::Array(names.iter().map(String::as_str).collect::<Array>())
}

/// Applies an update of a signing credential's `auth` (same type, checked).
fn update_signing_auth(auth: &mut dyn TableLike, update: &AuthUpdate) {
    match update {
        AuthUpdate::AwsSigv4 {
            access_key_id,
            secret_access_key,
            session_token,
            networking: n,
            regions,
            services,
        } => {
            if let Some(s) = access_key_id {
                set_secret(auth, "access_key_id", s);
            }
            if let Some(s) = secret_access_key {
                set_secret(auth, "secret_access_key", s);
            }
            match session_token {
                Some(Some(t)) => set_secret(auth, "session_token", t),
                Some(None) => {
                    for key in ["session_token", "session_token_env", "session_token_file"] {
                        auth.remove(key);
                    }
                }
                None => {}
            }
            if let Some(n) = n {
                auth.insert("networking", Item::Value(networking(n)));
            }
            for (key, names) in [("regions", regions), ("services", services)] {
                if let Some(names) = names {
                    auth.insert(key, Item::Value(strings(names)));
                }
            }
        }
        AuthUpdate::HmacSignature {
            secret_value,
            algorithm,
            encoding,
            message,
            signature_header,
            timestamp_header,
            networking: n,
            ..
        } => {
            if let Some(s) = secret_value {
                set_secret(auth, "secret_value", s);
            }
            for (key, v) in [
                ("algorithm", algorithm),
                ("encoding", encoding),
                ("message", message),
                ("signature_header", signature_header),
            ] {
                if let Some(v) = v {
                    auth.insert(key, value(v.as_str()));
                }
            }
            if let Some(t) = timestamp_header {
                set_opt(auth, "timestamp_header", t.as_deref());
            }
            if let Some(n) = n {
                auth.insert("networking", Item::Value(networking(n)));
            }
        }
        _ => {}
    }
}

/// Applies an `auth` update to the stored `auth` table (already checked: same type, immutable
/// fields unchanged). `networking` is replaced whole, `injection_location` merged.
pub fn update_auth(auth: &mut dyn TableLike, update: &AuthUpdate) {
    match update {
        AuthUpdate::EnvironmentVariable {
            secret_value,
            networking: n,
            injection_location,
            ..
        } => {
            if let Some(s) = secret_value {
                set_secret(auth, "secret_value", s);
            }
            if let Some(n) = n {
                auth.insert("networking", Item::Value(networking(n)));
            }
            if let Some(i) = injection_location {
                injection(auth, i);
            }
        }
        AuthUpdate::StaticBearer { token, .. } => {
            if let Some(t) = token {
                set_secret(auth, "token", t);
            }
        }
        AuthUpdate::McpOauth {
            access_token,
            expires_at,
            refresh,
            ..
        } => {
            if let Some(t) = access_token {
                set_secret(auth, "access_token", t);
            }
            if let Some(e) = expires_at {
                set_opt(auth, "expires_at", e.as_deref());
            }
            match refresh {
                Some(None) => {
                    auth.remove("refresh");
                }
                Some(Some(r)) => {
                    let Some(stored) = auth.get_mut("refresh").and_then(Item::as_table_like_mut)
                    else {
                        return;
                    };
                    if let Some(t) = &r.refresh_token {
                        set_secret(stored, "refresh_token", t);
                    }
                    if let Some(s) = &r.scope {
                        set_opt(stored, "scope", s.as_deref());
                    }
                    if let Some(p) = &r.token_endpoint_auth {
                        let existing = stored
                            .get("token_endpoint_auth")
                            .and_then(Item::as_table_like);
                        let new = token_auth(p, existing);
                        stored.insert("token_endpoint_auth", Item::Value(Value::InlineTable(new)));
                    }
                }
                None => {}
            }
        }
        AuthUpdate::AwsSigv4 { .. } | AuthUpdate::HmacSignature { .. } => {
            update_signing_auth(auth, update);
        }
    }
}
