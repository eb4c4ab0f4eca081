//! `keyswap store migrate | import --from FILE | export` (SPEC §10): the operator's commands on
//! the shared store, each through the same transaction path as the admin API.

use std::path::Path;

use toml_edit::{ArrayOfTables, DocumentMut, Item};
use zeroize::Zeroizing;

use super::{Database, DbError, WriteError};
use crate::config::{Config, ConfigErrors};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(
        "`[store] backend` is \"file\" in {0}: these commands work on the PostgreSQL store (set backend = \"postgres\")"
    )]
    NotPostgres(String),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("{0}")]
    Invalid(ConfigErrors),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

impl From<WriteError> for CommandError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Invalid(errors) | WriteError::StoredInvalid(errors) => {
                Self::Invalid(errors)
            }
            WriteError::Database(e) => Self::Database(e),
        }
    }
}

async fn open(config: &Config) -> Result<Database, CommandError> {
    if config.store.backend != crate::config::Backend::Postgres {
        let source = config
            .source
            .as_deref()
            .map_or("the embedded defaults".into(), |p| p.display().to_string());
        return Err(CommandError::NotPostgres(source));
    }
    let database = Database::from_settings(&config.store, config)?;
    database.migrate().await?;
    Ok(database)
}

/// `config` with the vaults stored now (the file's own with the file backend).
pub async fn with_stored_vaults(config: Config) -> Result<Config, CommandError> {
    if config.store.backend != crate::config::Backend::Postgres {
        return Ok(config);
    }
    let database = open(&config).await?;
    match super::merged_config(&database, &config).await {
        Ok((merged, ..)) => Ok(merged),
        Err(super::MergeError::Database(e)) => Err(e.into()),
        Err(super::MergeError::Stored(errors)) => Err(CommandError::Invalid(errors)),
    }
}

/// Creates or upgrades the schema.
pub async fn migrate(config: &Config) -> Result<(), CommandError> {
    open(config).await.map(drop)
}

/// The stored vaults as TOML, without any secret value.
pub async fn export(config: &Config) -> Result<String, CommandError> {
    Ok(open(config).await?.export().await?)
}

/// Copies the vaults and credentials of the file-backed config `from` into the database: ids
/// kept, a vault that exists replaced by the file's (so importing twice changes nothing).
/// Returns how many vaults were imported.
pub async fn import(config: &Config, from: &Path) -> Result<usize, CommandError> {
    let database = open(config).await?;
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map(Zeroizing::new)
            .map_err(|source| CommandError::Read {
                path: path.display().to_string(),
                source,
            })
    };
    let source = read(from)?;
    // Validated as the file it is (its own `_env` / `_file` sources included).
    Config::load(from).map_err(CommandError::Invalid)?;
    let incoming: DocumentMut = source
        .parse()
        .map_err(|_| CommandError::Invalid(ConfigErrors(vec![])))?;
    let incoming = incoming
        .get("vaults")
        .and_then(Item::as_array_of_tables)
        .cloned()
        .unwrap_or_default();
    let count = incoming.len();
    let own = match &config.source {
        Some(path) => read(path)?,
        None => Zeroizing::new(String::new()),
    };
    let base = config
        .source
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let name = config
        .source
        .as_deref()
        .map_or("<embedded defaults>".into(), |p| p.display().to_string());
    let merge = |vaults: &str| Config::with_vaults(&own, vaults, &name, &base);
    let Ok(_) = database
        .write(
            merge,
            |doc, _| {
                upsert(doc, &incoming);
                Ok::<(), std::convert::Infallible>(())
            },
            "import",
        )
        .await?;
    Ok(count)
}

/// Each incoming vault replaces the stored one with its id, or is appended.
fn upsert(doc: &mut DocumentMut, incoming: &ArrayOfTables) {
    if doc
        .get("vaults")
        .and_then(Item::as_array_of_tables)
        .is_none()
    {
        doc.insert("vaults", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    let Some(stored) = doc.get_mut("vaults").and_then(Item::as_array_of_tables_mut) else {
        return;
    };
    for vault in incoming.iter() {
        let id = vault.get("id").and_then(Item::as_str);
        let at = stored
            .iter()
            .position(|v| v.get("id").and_then(Item::as_str) == id);
        match at.and_then(|i| stored.get_mut(i)) {
            Some(existing) => *existing = vault.clone(),
            None => stored.push(vault.clone()),
        }
    }
}
