//! The human outputs of `inspect`, pinned: run against the committed
//! version-1 fixture store, whose ids and times never change, and compared
//! with the files in `tests/snapshots/`. After a deliberate change of an
//! output, `REGSAGA_UPDATE_SNAPSHOTS=1 cargo test --test snapshots`
//! rewrites them; review the diff before committing it.

mod common;

use common::copy_dir;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn check(name: &str, args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    copy_dir(&common::fixture_store(), &store);
    let output = Command::new(env!("CARGO_BIN_EXE_regsaga"))
        .arg("inspect")
        .args(args)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let actual = String::from_utf8(output.stdout).unwrap();

    let path = root().join("tests/snapshots").join(format!("{name}.txt"));
    if std::env::var_os("REGSAGA_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}; create it with REGSAGA_UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "inspect {args:?} differs from {}",
        path.display()
    );
}

#[test]
fn inspect_list_table() {
    check("list", &["list"]);
}

#[test]
fn inspect_show_text() {
    check("show-declined", &["show", "grace@example.org"]);
    check("show-waiting", &["show", "wait@example.com"]);
    check("show-in-flight", &["show", "fly@example.com"]);
}

#[test]
fn inspect_stats_table() {
    check("stats", &["stats"]);
}

#[test]
fn inspect_audit_table() {
    check("audit", &["audit"]);
}
