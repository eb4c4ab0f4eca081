//! The PostgreSQL backend (SPEC §10): vaults and credentials shared by every replica.
//!
//! Rows hold each vault and credential as TOML lines with their secrets sealed apart (`rows`,
//! `seal`). Every write is one transaction under one advisory lock: the rows are read fresh, the
//! admin API's edit is applied to them as a document, the result is validated with the file's
//! settings, the changed rows are written, and a change-log row plus a `pg_notify` carrying only
//! the revision go out in the same transaction — so writes on different replicas serialise and
//! never lose one another. Replicas follow the change log (`sync`): the request path reads only
//! the in-memory store, never the database.

pub mod commands;
mod rows;
mod schema;
mod seal;
pub mod sync;

use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::{Client, Transaction};
use tracing::warn;
use zeroize::Zeroizing;

use crate::config::{Config, ConfigErrors, StoreSettings};

pub use rows::SECRET_KEYS;
pub use seal::{KeyError, StoreKey};

/// The advisory lock every write takes (one writer at a time across replicas).
const WRITE_LOCK: i64 = 0x6b65_7973_7761_7001;
/// The channel a commit notifies, with the new revision as payload (never a value).
pub const CHANNEL: &str = "keyswap_changes";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "{0} is not set: export the PostgreSQL URL (postgres://user:password@host:5432/db) before starting keyswap"
    )]
    NoUrl(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the database: {}", with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error(
        "{0} does not open the secrets in this database: give the key the database was created with"
    )]
    WrongKey(String),
    #[error("credential {0}: its sealed secrets do not open with this key")]
    Sealed(String),
    #[error("cannot set up TLS to the database: {0}")]
    Tls(String),
    #[error("the database connection is not open")]
    NotConnected,
}

/// `error: cause: cause…` — tokio-postgres keeps the reason (a refused certificate, a refused
/// password) in the source chain, which the operator needs to see.
fn with_causes(error: &tokio_postgres::Error) -> String {
    let mut out = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// A connection to the shared store.
pub struct Database {
    url: Zeroizing<String>,
    key: StoreKey,
    key_env: String,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// The connection for reads and writes, made again when it breaks.
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Database(..)")
    }
}

impl Database {
    /// The database named by `[store] url_env`, with the key of `key_env` (both read now).
    pub fn from_settings(settings: &StoreSettings, config: &Config) -> Result<Self, DbError> {
        let url = std::env::var(&settings.url_env)
            .ok()
            .filter(|u| !u.trim().is_empty())
            .map(Zeroizing::new)
            .ok_or_else(|| DbError::NoUrl(settings.url_env.clone()))?;
        let key = StoreKey::from_env(&settings.key_env)?;
        let mut tls = crate::upstream::client_tls_config(&config.tls.upstream_ca_files)
            .map_err(|e| DbError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Self {
            url,
            key,
            key_env: settings.key_env.clone(),
            tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls),
            client: Mutex::new(None),
        })
    }

    /// A new connection (`sslmode` from the URL: `disable`, `prefer` or `require`).
    pub async fn connect(
        &self,
    ) -> Result<
        (
            Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
                    tokio_postgres::Socket,
                >>::Stream,
            >,
        ),
        DbError,
    > {
        Ok(tokio_postgres::connect(&self.url, self.tls.clone()).await?)
    }

    /// The shared connection, made (again) when there is none or it closed.
    async fn client(&self) -> Result<MappedMutexGuard<'_, Client>, DbError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = self.connect().await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    warn!(error = %e, "database connection ended");
                }
            });
            *guard = Some(client);
        }
        MutexGuard::try_map(guard, Option::as_mut).map_err(|_| DbError::NotConnected)
    }

    /// Creates or upgrades the schema (under an advisory lock: replicas may start at once) and
    /// checks that the key opens this database's secrets.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let mut client = self.client().await?;
        schema::migrate(&mut client).await?;
        let tx = client.transaction().await?;
        let check = tx
            .query_opt("SELECT key_check FROM keyswap_meta WHERE id = 1", &[])
            .await?;
        match check {
            Some(row) => {
                let sealed: Vec<u8> = row.get(0);
                if self.key.open(KEY_CHECK, &sealed).is_err() {
                    return Err(DbError::WrongKey(self.key_env.clone()));
                }
            }
            None => {
                tx.execute(
                    "INSERT INTO keyswap_meta (id, key_check) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                    &[&self.key.seal(KEY_CHECK, KEY_CHECK.as_bytes())],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The last committed revision.
    pub async fn revision(&self) -> Result<i64, DbError> {
        let client = self.client().await?;
        // A broken connection shows as closed: the next call connects again.
        let row = client
            .query_one(
                "SELECT coalesce(max(revision), 0) FROM keyswap_changes",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// The revision and the `[[vaults]]` text of everything stored (secrets opened).
    pub async fn load(&self) -> Result<(i64, Zeroizing<String>), DbError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let loaded = self.read(&tx, Secrets::Opened).await?;
        tx.commit().await?;
        Ok((
            loaded.revision,
            rows::join(&loaded.vaults, &loaded.credentials),
        ))
    }

    /// Applies `edit` to the stored vaults as a `[[vaults]]` document, validates the result with
    /// `merge` (the file's settings plus these vaults), and commits the changed rows, one change-log
    /// row and its notification in one transaction. The new config and revision come back.
    pub async fn write<T, E>(
        &self,
        merge: impl Fn(&str) -> Result<Config, ConfigErrors>,
        edit: impl FnOnce(&mut toml_edit::DocumentMut, &Config) -> Result<T, E>,
        origin: &str,
    ) -> Result<Result<Written<T>, E>, WriteError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
            .await
            .map_err(DbError::from)?;
        let before = self.read(&tx, Secrets::Opened).await?;
        let text = rows::join(&before.vaults, &before.credentials);
        let config = merge(&text).map_err(WriteError::StoredInvalid)?;
        let mut document: toml_edit::DocumentMut = text
            .parse()
            .map_err(|_| WriteError::StoredInvalid(ConfigErrors(vec![])))?;
        let result = match edit(&mut document, &config) {
            Ok(result) => result,
            Err(e) => return Ok(Err(e)),
        };
        let text = Zeroizing::new(document.to_string());
        let config = merge(&text).map_err(WriteError::Invalid)?;
        let (vaults, credentials) = rows::split(&document);
        self.store_rows(&tx, &before, &vaults, &credentials).await?;
        let revision: i64 = tx
            .query_one(
                "INSERT INTO keyswap_changes (origin) VALUES ($1) RETURNING revision",
                &[&origin],
            )
            .await
            .map_err(DbError::from)?
            .get(0);
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &revision.to_string()],
        )
        .await
        .map_err(DbError::from)?;
        tx.commit().await.map_err(DbError::from)?;
        Ok(Ok(Written {
            result,
            config,
            revision,
            vaults: text,
        }))
    }

    /// Every row, with its secrets opened or left out.
    async fn read(&self, tx: &Transaction<'_>, secrets: Secrets) -> Result<Loaded, DbError> {
        let revision: i64 = tx
            .query_one(
                "SELECT coalesce(max(revision), 0) FROM keyswap_changes",
                &[],
            )
            .await?
            .get(0);
        let vaults = tx
            .query(
                "SELECT id, body FROM keyswap_vaults ORDER BY position, id",
                &[],
            )
            .await?
            .into_iter()
            .map(|r| rows::VaultRow {
                id: r.get(0),
                body: r.get(1),
            })
            .collect();
        let columns = match secrets {
            Secrets::Opened => "id, vault_id, body, secrets",
            Secrets::Left => "id, vault_id, body",
        };
        let query = format!("SELECT {columns} FROM keyswap_credentials ORDER BY position, id");
        let mut credentials = Vec::new();
        for r in tx.query(&query, &[]).await? {
            let id: String = r.get(0);
            let secrets = match secrets {
                Secrets::Opened => self.open(&id, r.get(3))?,
                Secrets::Left => rows::Secrets::new(),
            };
            credentials.push(rows::CredentialRow {
                id,
                vault_id: r.get(1),
                body: r.get(2),
                secrets,
            });
        }
        Ok(Loaded {
            revision,
            vaults,
            credentials,
        })
    }

    /// A credential's sealed secrets, opened.
    fn open(&self, id: &str, sealed: Vec<u8>) -> Result<rows::Secrets, DbError> {
        let sealed_error = || DbError::Sealed(id.to_string());
        let plain = self.key.open(id, &sealed).map_err(|_| sealed_error())?;
        let secrets: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(&plain).map_err(|_| sealed_error())?;
        Ok(secrets
            .into_iter()
            .map(|(k, v)| (k, Zeroizing::new(v)))
            .collect())
    }

    /// Writes what differs from `before`: changed or new rows (secrets sealed afresh), and
    /// deletes rows that are gone. Positions keep the document's order.
    async fn store_rows(
        &self,
        tx: &Transaction<'_>,
        before: &Loaded,
        vaults: &[rows::VaultRow],
        credentials: &[rows::CredentialRow],
    ) -> Result<(), DbError> {
        for old in &before.credentials {
            if !credentials.iter().any(|c| c.id == old.id) {
                tx.execute("DELETE FROM keyswap_credentials WHERE id = $1", &[&old.id])
                    .await?;
            }
        }
        for old in &before.vaults {
            if !vaults.iter().any(|v| v.id == old.id) {
                tx.execute("DELETE FROM keyswap_vaults WHERE id = $1", &[&old.id])
                    .await?;
            }
        }
        for (position, vault) in (0i32..).zip(vaults) {
            if before.vaults.iter().position(|v| v == vault) == Some(position as usize) {
                continue;
            }
            tx.execute(
                "INSERT INTO keyswap_vaults (id, position, body) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET position = $2, body = $3, version = keyswap_vaults.version + 1",
                &[&vault.id, &position, &vault.body],
            )
            .await?;
        }
        for (position, credential) in (0i32..).zip(credentials) {
            if before.credentials.iter().position(|c| c == credential) == Some(position as usize) {
                continue;
            }
            let plain: std::collections::BTreeMap<&str, &str> = credential
                .secrets
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let plain = Zeroizing::new(serde_json::to_vec(&plain).unwrap_or_default());
            let sealed = self.key.seal(&credential.id, &plain);
            tx.execute(
                "INSERT INTO keyswap_credentials (id, vault_id, position, body, secrets) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET vault_id = $2, position = $3, body = $4, secrets = $5,
                 version = keyswap_credentials.version + 1",
                &[&credential.id, &credential.vault_id, &position, &credential.body, &sealed],
            )
            .await?;
        }
        Ok(())
    }

    /// The stored vaults as §4 TOML without any secret value (`keyswap store export`).
    pub async fn export(&self) -> Result<String, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stored = self.read(&tx, Secrets::Left).await?;
        tx.commit().await?;
        Ok(rows::join(&stored.vaults, &stored.credentials).to_string())
    }
}

/// Whether [`Database::read`] opens the sealed secrets (to use them) or leaves them out (to show
/// the rows: they are never read then).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Secrets {
    Opened,
    Left,
}

/// `config` (read from its file) with the vaults stored now: what a replica starts on, and what
/// `keyswap env` prints placeholders from. Also the revision and `[[vaults]]` text it holds.
pub async fn merged_config(
    database: &Database,
    config: &Config,
) -> Result<(Config, i64, Zeroizing<String>), MergeError> {
    let (revision, vaults) = database.load().await?;
    let path = config
        .source
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(crate::config::DEFAULT_PATH));
    let text = Zeroizing::new(std::fs::read_to_string(&path).unwrap_or_default());
    let base = path.parent().unwrap_or(std::path::Path::new(""));
    let mut merged = Config::with_vaults(&text, &vaults, &path.display().to_string(), base)
        .map_err(MergeError::Stored)?;
    merged.source = config.source.clone();
    Ok((merged, revision, vaults))
}

/// Why the stored vaults could not be merged with the file.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("the vaults in the database do not validate with this file: {0}")]
    Stored(ConfigErrors),
}

/// Held while one replica refreshes one `mcp_oauth` credential's token (SPEC §10: single-flight
/// across replicas): a session-level advisory lock on a connection of its own, released when the
/// guard (the connection) is dropped — also when the replica dies.
pub struct FlightLock {
    _client: Client,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for FlightLock {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// The advisory-lock class of token refreshes (the second key is the credential id's hash).
const REFRESH_LOCK_CLASS: i32 = 0x6b73_7201;

impl Database {
    /// Waits until no other replica refreshes `credential_id`, and holds that until dropped.
    pub async fn refresh_lock(&self, credential_id: &str) -> Result<FlightLock, DbError> {
        let (client, connection) = self.connect().await?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        client
            .execute(
                "SELECT pg_advisory_lock($1, hashtext($2))",
                &[&REFRESH_LOCK_CLASS, &credential_id],
            )
            .await?;
        Ok(FlightLock {
            _client: client,
            connection,
        })
    }
}

/// What `keyswap_meta.key_check` seals: opening it proves the key is this database's.
const KEY_CHECK: &str = "keyswap-store-key-check";

/// A committed write: the edit's result, the config now in force, its revision and vaults text.
pub struct Written<T> {
    pub result: T,
    pub config: Config,
    pub revision: i64,
    pub vaults: Zeroizing<String>,
}

struct Loaded {
    revision: i64,
    vaults: Vec<rows::VaultRow>,
    credentials: Vec<rows::CredentialRow>,
}

/// Why a database write was not applied.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Invalid(ConfigErrors),
    #[error("the stored vaults do not validate with this file's settings: {0}")]
    StoredInvalid(ConfigErrors),
    #[error(transparent)]
    Database(#[from] DbError),
}
