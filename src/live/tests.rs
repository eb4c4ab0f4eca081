use super::*;
use std::os::unix::fs::PermissionsExt as _;

#[test]
fn atomic_write_replaces_the_file_with_mode_0600_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.toml");
    std::fs::write(&path, "old").unwrap();
    write_atomically(&path, b"new").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn atomic_write_through_a_symlink_keeps_the_link() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("real.toml"), "old").unwrap();
    std::os::unix::fs::symlink("real.toml", dir.path().join("link.toml")).unwrap();
    write_atomically(&dir.path().join("link.toml"), b"new").unwrap();
    assert!(
        std::fs::symlink_metadata(dir.path().join("link.toml"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("real.toml")).unwrap(),
        "new"
    );
}

/// An attacker who can write into the config folder plants symlinks at the names a write
/// might use; none may be written through, and the config must still be replaced.
#[test]
fn atomic_write_never_follows_a_planted_temporary_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.toml");
    std::fs::write(&path, "old").unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let pid = std::process::id();
    let mut planted = Vec::new();
    for p in [pid, pid + 1, pid.saturating_sub(1), 0, 1] {
        for name in [
            format!(".k.toml.keyswap-{p}.tmp"),
            format!("k.toml.keyswap-{p}.tmp"),
            format!(".k.toml.tmp.{p}"),
        ] {
            let link = dir.path().join(name);
            std::os::unix::fs::symlink(&victim, &link).unwrap();
            planted.push(link);
        }
    }
    for _ in 0..3 {
        write_atomically(&path, b"new").unwrap();
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    assert!(
        !std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    for link in planted {
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}

#[test]
fn temporary_names_are_fresh_and_unpredictable() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _fa) = create_temporary(dir.path(), "k.toml").unwrap();
    let (b, _fb) = create_temporary(dir.path(), "k.toml").unwrap();
    assert_ne!(a, b);
    let name = a.file_name().unwrap().to_string_lossy().into_owned();
    let random = name
        .strip_prefix(".k.toml.keyswap-")
        .and_then(|r| r.strip_suffix(".tmp"))
        .unwrap();
    assert!(
        random.len() == 32 && random.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}: 128 random bits, not the pid"
    );
    assert_eq!(
        std::fs::metadata(&a).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

fn live(dir: &Path, text: &str) -> Live {
    let path = dir.join("k.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::from_toml(text, "k.toml", dir).unwrap();
    let store = Arc::new(StoreHandle::new(
        crate::store::Store::build(config, 1).unwrap(),
    ));
    Live::new(path, store, Some(text), Arc::new(Metrics::new()))
}

const ONE: &str = "[[vaults]]\nid = \"vlt_a\"\n";

#[tokio::test]
async fn reload_applies_valid_edits_and_refuses_invalid_ones_whole() {
    let dir = tempfile::tempdir().unwrap();
    let live = live(dir.path(), ONE);
    live.reload("watch", false).await;
    assert_eq!(
        live.store().load().generation,
        1,
        "unchanged text does not reload"
    );
    std::fs::write(live.path(), format!("{ONE}[[vaults]]\nid = \"vlt_b\"\n")).unwrap();
    live.reload("watch", false).await;
    assert_eq!(live.store().load().generation, 2);
    assert_eq!(live.store().load().config().vaults.len(), 2);
    std::fs::write(live.path(), "[proxy]\nnope = 1\n").unwrap();
    live.reload("watch", false).await;
    assert_eq!(
        live.store().load().generation,
        2,
        "the last good store stays"
    );
    let status = live.status();
    assert!(!status.ok);
    assert!(
        status.errors[0].contains("k.toml:2:1:"),
        "{:?}",
        status.errors
    );
    live.reload("sighup", true).await;
    assert_eq!(live.store().load().generation, 2);
}

#[tokio::test]
async fn write_keeps_comments_and_a_concurrent_hand_edit() {
    let dir = tempfile::tempdir().unwrap();
    let live = live(
        dir.path(),
        "# operator comment\n[[vaults]]\nid = \"vlt_a\"\n",
    );
    // A hand edit lands on disk before the admin write is applied.
    std::fs::write(
        live.path(),
        "# operator comment\n[[vaults]]\nid = \"vlt_a\"\ndisplay_name = \"Hand\"\n",
    )
    .unwrap();
    let done: Result<(), ()> = live
        .write(|doc, _| {
            let vaults = doc["vaults"].as_array_of_tables_mut().unwrap();
            let mut t = toml_edit::Table::new();
            t["id"] = toml_edit::value("vlt_b");
            vaults.push(t);
            Ok(())
        })
        .await
        .unwrap();
    done.unwrap();
    let text = std::fs::read_to_string(live.path()).unwrap();
    assert!(text.starts_with("# operator comment\n"), "{text}");
    assert!(text.contains("display_name = \"Hand\""), "{text}");
    assert!(text.contains("vlt_b"), "{text}");
    assert_eq!(live.store().load().config().vaults.len(), 2);
}

#[tokio::test]
async fn an_invalid_write_changes_neither_file_nor_store() {
    let dir = tempfile::tempdir().unwrap();
    let live = live(dir.path(), ONE);
    let result = live
        .write(|doc, _| {
            doc["vaults"]
                .as_array_of_tables_mut()
                .unwrap()
                .get_mut(0)
                .unwrap()["id"] = toml_edit::value("bad");
            Ok::<(), ()>(())
        })
        .await;
    assert!(matches!(result, Err(WriteError::Invalid(_))));
    assert_eq!(std::fs::read_to_string(live.path()).unwrap(), ONE);
    assert_eq!(live.store().load().generation, 1);
}
