//! Data directories of older storage formats are refused at start, with a
//! message that says how to migrate, and are left untouched: the release
//! that kept its log in a bincode write-ahead log (`tests/fixtures/v1-data`,
//! storage format 1) and the one that kept its state machines in memory with
//! snapshot files (`tests/fixtures/v2-data`, storage format 2).

mod common;

use std::path::Path;
use std::process::Command;

use keyraft_client::local::{remove_dir, scratch_dir};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(listing(&e.path()));
        } else {
            out.push((e.path().display().to_string(), std::fs::read(e.path()).unwrap()));
        }
    }
    out.sort();
    out
}

/// Starts a node on a copy of `fixture`; checks it refuses with `needles`
/// and leaves the directory as it was.
fn refused(fixture: &str, needles: &[&str]) {
    let root = scratch_dir(fixture);
    let dir = root.join("node-0");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture), &dir);
    let before = listing(&dir);
    let out = Command::new(common::node_bin())
        .args(["--name", "node-0", "--cluster", "keyraft", "--listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0", "--advertise", "127.0.0.1:1"])
        // The storage check is what is tested here, not the transport.
        .arg("--insecure-plaintext")
        .arg("--data-dir")
        .arg(&dir)
        .env("KEYRAFT_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{fixture} must be refused");
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in needles {
        assert!(err.contains(needle), "message lacks {needle:?}: {err}");
    }
    assert_eq!(listing(&dir), before, "the refused directory must be left as it was");
    remove_dir(&root);
}

#[test]
fn a_format_1_data_directory_is_refused_with_how_to_migrate() {
    refused(
        "v1-data",
        &["older Keyraft release", "storage format 1", "Refusing to start", "delete the data directory"],
    );
}

#[test]
fn a_format_2_data_directory_is_refused_with_how_to_migrate() {
    refused(
        "v2-data",
        &["older Keyraft release", "storage format 2", "Refusing to start", "delete the data directory"],
    );
}
