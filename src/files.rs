//! Files that hold secrets must be private to keyswap's user (SPEC §8): the CA key, and a config
//! file that holds literal secrets. One readable by group or others is refused at start, with the
//! `chmod` that fixes it, because every other user of the machine could read the secrets in it.

use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// Permission bits that let someone other than the owner read the file.
const READABLE_BY_OTHERS: u32 = 0o044;

/// A secret-bearing file that group or others can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {} is readable by group or others (mode {mode:04o}); run `chmod 600 {}`",
    path.display(),
    shell_word(path)
)]
pub struct NotPrivate {
    /// What the file is, for the message: "the CA key", "the configuration file".
    pub what: &'static str,
    pub path: PathBuf,
    pub mode: u32,
}

/// Err when `path` exists and group or others may read it. A file that cannot be inspected
/// passes: reading it is where that problem is reported.
pub fn ensure_private(what: &'static str, path: &Path) -> Result<(), NotPrivate> {
    // Through symlinks: the mode that matters is the one of the file that holds the bytes.
    let Ok(metadata) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & READABLE_BY_OTHERS == 0 {
        return Ok(());
    }
    Err(NotPrivate {
        what,
        path: path.to_path_buf(),
        mode,
    })
}

/// `path` as one word a POSIX shell reads back unchanged (so the advice can be pasted).
fn shell_word(path: &Path) -> impl fmt::Display + '_ {
    struct Word<'a>(std::borrow::Cow<'a, str>);
    impl fmt::Display for Word<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let plain = !self.0.is_empty()
                && self
                    .0
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%".contains(&b));
            if plain {
                f.write_str(&self.0)
            } else {
                write!(f, "'{}'", self.0.replace('\'', r"'\''"))
            }
        }
    }
    Word(path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_mode(mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn readable_by_group_or_others_is_refused_with_the_chmod() {
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let (_dir, path) = with_mode(mode);
            let e = ensure_private("the CA key", &path).unwrap_err();
            assert_eq!(e.mode, mode);
            let shown = e.to_string();
            assert!(
                shown.ends_with(&format!("run `chmod 600 {}`", path.display())),
                "{shown}"
            );
        }
        for mode in [0o600, 0o400, 0o700] {
            let (_dir, path) = with_mode(mode);
            assert!(ensure_private("the CA key", &path).is_ok(), "{mode:o}");
        }
        assert!(ensure_private("the CA key", Path::new("/nonexistent/key")).is_ok());
    }

    #[test]
    fn the_chmod_quotes_paths_a_shell_would_split() {
        assert_eq!(
            shell_word(Path::new("certs/ca-key.pem")).to_string(),
            "certs/ca-key.pem"
        );
        assert_eq!(
            shell_word(Path::new("my dir/k.toml")).to_string(),
            "'my dir/k.toml'"
        );
        assert_eq!(shell_word(Path::new("it's")).to_string(), r"'it'\''s'");
    }
}
