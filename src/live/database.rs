//! The live configuration with `[store] backend = "postgres"` (SPEC §10): the vaults come from the
//! database, merged with the file's settings on every parse; admin writes go to the database in
//! one transaction; a newer revision (notified, polled, or seen before an OAuth refresh) is
//! swapped in; failures keep the store in force (fail static) and are counted.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::{Live, SyncStatus, Synced, WriteError, ok_label};
use crate::config::Config;
use crate::dbstore::{Database, DbError, WriteError as DbWriteError};

impl Live {
    /// The vaults come from `database`, where they were at `revision` as `vaults`.
    pub fn with_database(
        mut self,
        database: Arc<Database>,
        revision: i64,
        vaults: Zeroizing<String>,
    ) -> Self {
        self.synced = Some(Mutex::new(Synced {
            database,
            revision,
            vaults,
            ok: true,
            at: std::time::Instant::now(),
        }));
        self.metrics.store_revision.set(revision);
        self
    }

    pub(super) fn with_synced<R>(&self, f: impl FnOnce(&mut Synced) -> R) -> Option<R> {
        let synced = self.synced.as_ref()?;
        let mut guard = synced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(f(&mut guard))
    }

    /// The revision whose vaults are in force (0 without a database).
    pub fn database_revision(&self) -> i64 {
        self.with_synced(|s| s.revision).unwrap_or(0)
    }

    /// The database answered: in sync.
    pub fn database_synced(&self) {
        let recovered = self.with_synced(|s| {
            let was = s.ok;
            s.ok = true;
            s.at = std::time::Instant::now();
            !was
        });
        if recovered == Some(true) {
            info!("the database is reachable again");
        }
    }

    /// The database failed `op`: the store in force stays (fail static); counted and logged.
    pub fn database_failed(&self, op: &'static str, error: &DbError) {
        self.metrics
            .store_errors
            .get_or_create(&crate::metrics::OpLabel { op: op.into() })
            .inc();
        let was = self.with_synced(|s| std::mem::replace(&mut s.ok, false));
        if was == Some(true) {
            warn!(op, error = %error, "the database is unreachable: proxying goes on with the last store; admin writes are refused until it returns");
        } else {
            debug!(op, error = %error, "the database is still unreachable");
        }
    }

    /// Where this replica stands with the database; `None` with the file backend.
    pub fn sync_status(&self) -> Option<SyncStatus> {
        self.with_synced(|s| SyncStatus {
            ok: s.ok,
            age: s.at.elapsed().as_secs_f64(),
            revision: s.revision,
        })
    }

    /// Swaps in the vaults of a newer `revision` (merged with the file as it is now).
    pub async fn apply_database(&self, revision: i64, vaults: Zeroizing<String>) {
        let _writer = self.writer.lock().await;
        if revision <= self.database_revision() {
            return self.database_synced();
        }
        let text = self.file_text();
        let file = self.path.display().to_string();
        let base = self.path.parent().unwrap_or(Path::new(""));
        let config = match Config::with_vaults(&text, &vaults, &file, base) {
            Ok(mut config) => {
                config.source = Some(self.path.clone());
                config
            }
            Err(errors) => {
                for e in &errors.0 {
                    warn!(revision, "database revision refused: {e}");
                }
                return;
            }
        };
        match self.store.replace(config) {
            Ok(generation) => {
                info!(
                    generation,
                    revision, "vaults changed in the database: applied"
                );
                self.metrics
                    .reloads
                    .get_or_create(&ok_label("database"))
                    .inc();
                self.metrics.store_revision.set(revision);
                self.with_synced(|s| {
                    s.revision = revision;
                    s.vaults = vaults;
                });
                self.database_synced();
            }
            Err(e) => warn!(error = %e, revision, "database revision refused"),
        }
    }

    /// With the database backend: waits until no other replica refreshes `credential_id`, holds
    /// that (the guard), and brings this replica's store up to the database first, so the caller
    /// sees tokens another replica stored meanwhile. `Ok(None)` with the file backend.
    pub async fn refresh_flight(
        &self,
        credential_id: &str,
    ) -> Result<Option<crate::dbstore::FlightLock>, DbError> {
        let Some(database) = self.with_synced(|s| s.database.clone()) else {
            return Ok(None);
        };
        let lock = match database.refresh_lock(credential_id).await {
            Ok(lock) => lock,
            Err(e) => {
                self.database_failed("refresh_lock", &e);
                return Err(e);
            }
        };
        self.catch_up(&database).await;
        Ok(Some(lock))
    }

    /// Applies the stored vaults when the database is ahead of this replica.
    pub async fn catch_up(&self, database: &Database) {
        let revision = match database.revision().await {
            Ok(revision) => revision,
            Err(e) => return self.database_failed("poll", &e),
        };
        if revision <= self.database_revision() {
            return self.database_synced();
        }
        match database.load().await {
            Ok((revision, vaults)) => self.apply_database(revision, vaults).await,
            Err(e) => self.database_failed("load", &e),
        }
    }

    /// The config file's text now (empty when there is none: the embedded defaults).
    fn file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(std::fs::read_to_string(&self.path).unwrap_or_default())
    }

    /// An admin write with the database backend: one transaction there (see `dbstore`), then the
    /// new store here; the other replicas follow the notification.
    pub(super) async fn write_database<T, E>(
        &self,
        database: &Database,
        edit: impl FnOnce(&mut toml_edit::DocumentMut, &Config) -> Result<T, E>,
    ) -> Result<Result<T, E>, WriteError> {
        let text = self.file_text();
        let file = self.path.display().to_string();
        let base = self.path.parent().unwrap_or(Path::new(""));
        let merge = |vaults: &str| {
            let mut config = Config::with_vaults(&text, vaults, &file, base)?;
            config.source = Some(self.path.clone());
            Ok(config)
        };
        let written = match database.write(merge, edit, "admin").await {
            Ok(Ok(written)) => written,
            Ok(Err(e)) => return Ok(Err(e)),
            Err(DbWriteError::Invalid(errors)) => return Err(WriteError::Invalid(errors)),
            Err(DbWriteError::StoredInvalid(errors)) => {
                return Err(WriteError::FileInvalid(errors));
            }
            Err(DbWriteError::Database(e)) => {
                self.database_failed("write", &e);
                return Err(WriteError::Database(e));
            }
        };
        let generation = self.store.replace(written.config)?;
        info!(
            generation,
            revision = written.revision,
            "vaults written to the database by the admin API"
        );
        self.metrics.reloads.get_or_create(&ok_label("admin")).inc();
        self.metrics.store_revision.set(written.revision);
        self.with_synced(|s| {
            s.revision = s.revision.max(written.revision);
            s.vaults = written.vaults;
        });
        self.database_synced();
        self.set_status(true, "admin", vec![]);
        Ok(Ok(written.result))
    }
}
