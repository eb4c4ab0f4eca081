//! Vaults as database rows and back (SPEC §10). A row holds one vault's or one credential's table
//! as TOML `key = value` lines (every sub-table inline), with every secret taken out into a map
//! that is sealed separately: no column holds a secret in clear. Joining the rows gives the
//! `[[vaults]]` text of §4, which `Config::with_vaults` validates like a file's.

use std::collections::BTreeMap;

use toml_edit::{DocumentMut, InlineTable, Item, Table, Value};
use zeroize::Zeroizing;

/// The keys whose values are secrets, at any depth of a credential (`auth.secret_value`,
/// `auth.refresh.token_endpoint_auth.client_secret`, …).
pub const SECRET_KEYS: [&str; 8] = [
    "secret_value",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "token",
    "access_token",
    "refresh_token",
    "client_secret",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultRow {
    pub id: String,
    pub body: String,
}

/// A credential's secrets by dotted path (`auth.secret_value`).
pub type Secrets = BTreeMap<String, Zeroizing<String>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRow {
    pub id: String,
    pub vault_id: String,
    pub body: String,
    pub secrets: Secrets,
}

/// The rows of a `[[vaults]]` document, in its order (vaults, and credentials within each).
pub fn split(doc: &DocumentMut) -> (Vec<VaultRow>, Vec<CredentialRow>) {
    let (mut vaults, mut credentials) = (Vec::new(), Vec::new());
    let Some(tables) = doc.get("vaults").and_then(Item::as_array_of_tables) else {
        return (vaults, credentials);
    };
    for vault in tables.iter() {
        let mut vault = vault.clone();
        let inner = vault.remove("credentials");
        let vault_id = string(&vault, "id");
        for credential in inner
            .iter()
            .filter_map(Item::as_array_of_tables)
            .flat_map(|a| a.iter())
        {
            let mut table = inline(credential.clone());
            let mut secrets = Secrets::new();
            take_secrets(&mut table, "", &mut secrets);
            credentials.push(CredentialRow {
                id: table
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                vault_id: vault_id.clone(),
                body: render(&table),
                secrets,
            });
        }
        vaults.push(VaultRow {
            id: vault_id,
            body: render(&inline(vault)),
        });
    }
    (vaults, credentials)
}

/// The `[[vaults]]` text of `vaults` and their `credentials` (secrets put back), in row order.
pub fn join(vaults: &[VaultRow], credentials: &[CredentialRow]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::new());
    for vault in vaults {
        out.push_str("[[vaults]]\n");
        out.push_str(&vault.body);
        for credential in credentials.iter().filter(|c| c.vault_id == vault.id) {
            out.push_str("\n[[vaults.credentials]]\n");
            out.push_str(&with_secrets(&credential.body, &credential.secrets));
        }
        out.push('\n');
    }
    out
}

fn string(table: &Table, key: &str) -> String {
    table
        .get(key)
        .and_then(Item::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The table with every sub-table made inline, as one `InlineTable` (so it renders as
/// `key = value` lines under any header).
fn inline(table: Table) -> InlineTable {
    let mut out = InlineTable::new();
    for (key, item) in table {
        let value = match item {
            Item::Value(v) => v,
            Item::Table(t) => Value::InlineTable(inline(t)),
            Item::ArrayOfTables(a) => Value::Array(a.into_array()),
            Item::None => continue,
        };
        out.insert(&key, value);
    }
    out
}

fn render(table: &InlineTable) -> String {
    let mut doc = DocumentMut::new();
    for (key, value) in table.iter() {
        let mut value = value.clone();
        value.decor_mut().clear();
        doc.insert(key, Item::Value(value));
    }
    doc.to_string()
}

fn take_secrets(table: &mut InlineTable, prefix: &str, out: &mut Secrets) {
    let keys: Vec<String> = table.iter().map(|(k, _)| k.to_string()).collect();
    for key in keys {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if SECRET_KEYS.contains(&key.as_str())
            && table.get(&key).is_some_and(Value::is_str)
            && let Some(value) = table.remove(&key)
        {
            let text = value.as_str().unwrap_or_default().to_string();
            out.insert(path, Zeroizing::new(text));
        } else if let Some(Value::InlineTable(inner)) = table.get_mut(&key) {
            take_secrets(inner, &path, out);
        }
    }
}

/// Puts `value` at `key` in the inline table `path` leads to from `table`.
fn put(table: &mut InlineTable, path: &[&str], key: &str, value: &str) {
    match path.split_first() {
        None => {
            table.insert(key, Value::from(value));
        }
        Some((first, rest)) => {
            if let Some(inner) = table.get_mut(first).and_then(Value::as_inline_table_mut) {
                put(inner, rest, key, value);
            }
        }
    }
}

fn with_secrets(body: &str, secrets: &Secrets) -> String {
    if secrets.is_empty() {
        return body.to_string();
    }
    let Ok(mut doc) = body.parse::<DocumentMut>() else {
        return body.to_string();
    };
    for (path, value) in secrets {
        let parts: Vec<&str> = path.split('.').collect();
        let Some((last, parents)) = parts.split_last() else {
            continue;
        };
        let Some((first, rest)) = parents.split_first() else {
            doc.insert(last, toml_edit::value(value.as_str()));
            continue;
        };
        if let Some(table) = doc
            .get_mut(first)
            .and_then(Item::as_value_mut)
            .and_then(Value::as_inline_table_mut)
        {
            put(table, rest, last, value);
        }
    }
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAULTS: &str = r#"
[[vaults]]
id = "vlt_a"
display_name = "A"
[vaults.metadata]
team = "x"

[[vaults.credentials]]
id = "vcrd_env"
auth = { type = "environment_variable", secret_name = "GH", secret_value = "ghp_REAL", networking = { type = "unrestricted" } }

[[vaults.credentials]]
id = "vcrd_oauth"
[vaults.credentials.auth]
type = "mcp_oauth"
mcp_server_url = "https://mcp.example.com/mcp"
access_token = "at_REAL"
refresh = { token_endpoint = "https://auth.example.com/token", client_id = "c", refresh_token = "rt_REAL", token_endpoint_auth = { type = "client_secret_post", client_secret = "cs_REAL" } }

[[vaults]]
id = "vlt_b"
"#;

    #[test]
    fn no_body_holds_a_secret_and_joining_gives_the_same_vaults_back() {
        let doc: DocumentMut = VAULTS.parse().unwrap();
        let (vaults, credentials) = split(&doc);
        assert_eq!(vaults.len(), 2);
        assert_eq!(credentials.len(), 2);
        for row in &credentials {
            for secret in ["ghp_REAL", "at_REAL", "rt_REAL", "cs_REAL"] {
                assert!(!row.body.contains(secret), "{}", row.body);
            }
        }
        assert_eq!(
            credentials[1].secrets.keys().collect::<Vec<_>>(),
            [
                "auth.access_token",
                "auth.refresh.refresh_token",
                "auth.refresh.token_endpoint_auth.client_secret"
            ]
        );
        let text = join(&vaults, &credentials);
        let config =
            crate::config::Config::from_toml(&text, "db", std::path::Path::new("")).unwrap();
        let original =
            crate::config::Config::from_toml(VAULTS, "f", std::path::Path::new("")).unwrap();
        assert_eq!(
            format!("{:?}", config.vaults),
            format!("{:?}", original.vaults)
        );
        // And again: split ∘ join is stable.
        let (v2, c2) = split(&text.parse().unwrap());
        assert_eq!((v2, c2), (vaults, credentials));
    }
}
