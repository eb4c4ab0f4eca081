//! The live configuration: one place where every change (a file edit, SIGHUP, an admin API write)
//! goes through "read → parse → validate → build store → (persist) → swap", serialised by one writer
//! lock. Readers never take that lock: they load the current [`Store`] from the [`StoreHandle`].

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ring::digest::{SHA256, digest};
use time::OffsetDateTime;
use tokio::sync::Mutex as AsyncMutex;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use crate::config::{Config, ConfigErrors};
use crate::dbstore::{Database, DbError};
use crate::metrics::Metrics;

mod database;
use crate::store::{BuildError, StoreHandle};

/// The outcome of the last attempt to change the configuration, for `/healthz`.
#[derive(Debug, Clone)]
pub struct ReloadStatus {
    pub ok: bool,
    pub at: OffsetDateTime,
    /// What triggered it: `start`, `watch`, `sighup`, `admin`.
    pub trigger: &'static str,
    /// `file:line:column: message` lines when it was refused.
    pub errors: Vec<String>,
}

/// Why a write could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The change itself is invalid (the message names what to fix).
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The file on disk has errors of its own: writing over it would drop the operator's edit.
    #[error("the configuration file has errors; fix it first: {0}")]
    FileInvalid(ConfigErrors),
    #[error("cannot write the configuration file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] BuildError),
    /// The database did not take the write (unreachable, or it failed): nothing changed.
    #[error(transparent)]
    Database(#[from] DbError),
}

/// Where this replica stands with the database (SPEC §10), for `/healthz` and the metrics.
#[derive(Debug, Clone, Copy)]
pub struct SyncStatus {
    pub ok: bool,
    /// Seconds since the last successful contact.
    pub age: f64,
    pub revision: i64,
}

/// The database and what this replica last took from it.
struct Synced {
    database: Arc<Database>,
    revision: i64,
    /// The `[[vaults]]` text of that revision, merged with the file's text on every parse.
    vaults: Zeroizing<String>,
    ok: bool,
    at: std::time::Instant,
}

/// The configuration file, the live store, and the writer lock.
pub struct Live {
    path: PathBuf,
    store: Arc<StoreHandle>,
    /// Held by whoever changes the configuration; holds the digest of the text last applied, so a
    /// file event caused by keyswap's own write (or by no change) does not reload.
    writer: AsyncMutex<Option<[u8; 32]>>,
    /// What `stat` said about the file when it was last read: the poll reads it only when this
    /// changed, so an idle keyswap does not re-read its config (SPEC §8).
    seen: Mutex<Option<Stamp>>,
    status: Mutex<ReloadStatus>,
    /// Reloads are counted by result.
    metrics: Arc<Metrics>,
    /// With `[store] backend = "postgres"`: the vaults come from there.
    synced: Option<Mutex<Synced>>,
}

/// The file's identity and change times, through symlinks (a `..data` swap changes the inode).
/// `stat` generates no file-system event, unlike a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

impl Live {
    /// `path` is the file keyswap reads and writes; it may not exist yet (embedded defaults).
    pub fn new(
        path: PathBuf,
        store: Arc<StoreHandle>,
        text: Option<&str>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let seen = text.and_then(|_| Stamp::of(&path));
        Self {
            path,
            store,
            metrics,
            synced: None,
            writer: AsyncMutex::new(text.map(fingerprint)),
            seen: Mutex::new(seen),
            status: Mutex::new(ReloadStatus {
                ok: true,
                at: OffsetDateTime::now_utc(),
                trigger: "start",
                errors: vec![],
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn store(&self) -> &Arc<StoreHandle> {
        &self.store
    }

    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn set_status(&self, ok: bool, trigger: &'static str, errors: Vec<String>) {
        let status = ReloadStatus {
            ok,
            at: OffsetDateTime::now_utc(),
            trigger,
            errors,
        };
        match self.status.lock() {
            Ok(mut s) => *s = status,
            Err(e) => *e.into_inner() = status,
        }
    }

    fn set_seen(&self, stamp: Option<Stamp>) {
        match self.seen.lock() {
            Ok(mut s) => *s = stamp,
            Err(e) => *e.into_inner() = stamp,
        }
    }

    /// The backstop poll: reloads only when `stat` shows the file changed since it was last read.
    pub async fn poll(&self) {
        let now = Stamp::of(&self.path);
        let seen = self
            .seen
            .lock()
            .map(|s| *s)
            .unwrap_or_else(|e| *e.into_inner());
        if now != seen {
            self.reload("poll", false).await;
        }
    }

    /// Re-reads the file and, when it changed (or `force`), validates it and swaps in a new store.
    /// An invalid file is refused whole: the store in force stays, the errors are logged and kept.
    pub async fn reload(&self, trigger: &'static str, force: bool) {
        let mut applied = self.writer.lock().await;
        debug!(trigger, "configuration file read");
        // Taken before the read: a change racing with it shows as a new stamp at the next poll.
        self.set_seen(Stamp::of(&self.path));
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => Zeroizing::new(text),
            // Running on the embedded defaults and still no file: nothing to do.
            Err(_) if applied.is_none() => return,
            Err(e) => {
                let message = format!("{}:1:1: cannot read: {e}", self.path.display());
                if self.status().errors != [message.clone()] {
                    warn!("configuration reload refused: {message}");
                }
                return self.set_status(false, trigger, vec![message]);
            }
        };
        let print = fingerprint(&text);
        if !force && *applied == Some(print) {
            return;
        }
        *applied = Some(print);
        match self.parse(&text) {
            Ok(config) => match self.store.replace(config) {
                Ok(generation) => {
                    info!(generation, trigger, "configuration reloaded");
                    self.metrics.reloads.get_or_create(&ok_label("ok")).inc();
                    self.set_status(true, trigger, vec![]);
                }
                Err(e) => {
                    warn!(error = %e, "configuration reload refused");
                    self.set_status(false, trigger, vec![e.to_string()]);
                }
            },
            Err(errors) => {
                self.metrics
                    .reloads
                    .get_or_create(&ok_label("refused"))
                    .inc();
                for e in &errors.0 {
                    warn!("configuration reload refused: {e}");
                }
                self.set_status(
                    false,
                    trigger,
                    errors.0.iter().map(ToString::to_string).collect(),
                );
            }
        }
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigErrors> {
        let base = self.path.parent().unwrap_or(Path::new(""));
        let file = self.path.display().to_string();
        let vaults = self.with_synced(|s| s.vaults.clone());
        let mut config = match vaults {
            Some(vaults) => Config::with_vaults(text, &vaults, &file, base)?,
            None => Config::from_toml(text, &file, base)?,
        };
        config.source = Some(self.path.clone());
        Ok(config)
    }

    /// Applies `edit` to the file's current text, validates the result, writes it atomically
    /// (temporary file, fsync, rename; mode 0600), and only then swaps the store in.
    ///
    /// The edit is applied to what is on disk now, so a concurrent hand edit is kept, not lost.
    pub async fn write<T, E>(
        &self,
        edit: impl FnOnce(&mut toml_edit::DocumentMut, &Config) -> Result<T, E>,
    ) -> Result<Result<T, E>, WriteError> {
        let mut applied = self.writer.lock().await;
        if let Some(database) = self.with_synced(|s| s.database.clone()) {
            return self.write_database(&database, edit).await;
        }
        let current = match std::fs::read_to_string(&self.path) {
            Ok(text) => Zeroizing::new(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Zeroizing::new(String::new()),
            Err(source) => {
                return Err(WriteError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let config = self.parse(&current).map_err(WriteError::FileInvalid)?;
        let mut document: toml_edit::DocumentMut = match current.parse() {
            Ok(doc) => doc,
            Err(_) => return Err(WriteError::FileInvalid(ConfigErrors(vec![]))),
        };
        let result = match edit(&mut document, &config) {
            Ok(result) => result,
            Err(e) => return Ok(Err(e)),
        };
        let text = Zeroizing::new(document.to_string());
        let config = self.parse(&text).map_err(WriteError::Invalid)?;
        write_atomically(&self.path, text.as_bytes()).map_err(|source| WriteError::Io {
            path: self.path.clone(),
            source,
        })?;
        *applied = Some(fingerprint(&text));
        self.set_seen(Stamp::of(&self.path));
        let generation = self.store.replace(config)?;
        info!(generation, "configuration written by the admin API");
        self.metrics.reloads.get_or_create(&ok_label("admin")).inc();
        self.set_status(true, "admin", vec![]);
        Ok(Ok(result))
    }
}

fn ok_label(outcome: &str) -> crate::metrics::OutcomeLabel {
    crate::metrics::OutcomeLabel {
        outcome: outcome.to_string(),
    }
}

fn fingerprint(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, text.as_bytes()).as_ref());
    out
}

/// Writes `contents` so that a crash leaves either the old file or the new one: a temporary file in
/// the same folder, fsync, rename over the target, fsync the folder. A symlinked target (as in a
/// Kubernetes volume) is written through to the file it points at.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (temp, mut file) = create_temporary(&dir, &name)?;
    let result = (|| {
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        // Ours: created just now by `create_temporary`, never someone else's file.
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// How many random names to try before giving up (a collision of 128 random bits means someone
/// is filling the folder on purpose).
const TEMPORARY_ATTEMPTS: usize = 8;

/// A new, empty file `.{name}.keyswap-{random}.tmp` in `dir`, mode 0600.
///
/// SECURITY: the config folder may be writable by others (a shared volume). The file is created
/// with `O_CREAT|O_EXCL|O_NOFOLLOW` under a name from the system's CSPRNG: a file or symlink
/// planted at any name is never opened, so secrets are never written through a link to a place
/// of an attacker's choosing, and the name cannot be guessed in advance.
fn create_temporary(dir: &Path, name: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
    use ring::rand::SecureRandom as _;
    let rng = ring::rand::SystemRandom::new();
    for _ in 0..TEMPORARY_ATTEMPTS {
        let mut random = [0u8; 16];
        rng.fill(&mut random)
            .map_err(|_| std::io::Error::other("the system's random source failed"))?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let temp = dir.join(format!(".{name}.keyswap-{suffix}.tmp"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free temporary file name beside the configuration file",
    ))
}

#[cfg(test)]
mod tests;
