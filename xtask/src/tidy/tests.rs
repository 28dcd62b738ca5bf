//! Tests of tidy itself, and the tidy check of this workspace run by `cargo test`.

use super::*;

#[test]
fn the_workspace_is_tidy() -> Result<(), Error> {
    check(&crate::root())
}

#[test]
fn dependency_lines_are_parsed() {
    let manifest = "[package]\nname = \"sync-engine\"\n[dependencies]\nsync-outbox.workspace = true\n\
                    sync-wal = { path = \"../sync-wal\" }\nserde.workspace = true\n[dev-dependencies]\nsync-store-file.workspace = true\n";
    assert_eq!(package_name(manifest).as_deref(), Some("sync-engine"));
    assert_eq!(
        workspace_dependencies(manifest),
        ["sync-outbox", "sync-wal"]
    );
}
