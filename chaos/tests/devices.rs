//! Two devices (the library as an app uses it, one on SQLite, one on the
//! WAL store with a skewed clock) edit shared and
//! own entities against the chaos server, concurrently; after they settle,
//! their recorded history and the end state pass the checker: every edit
//! applied once, each device equal to the server in its scopes, nothing of
//! another device's own scope seen.

use std::collections::BTreeSet;
use std::time::Duration;

use sync_chaos::device::StoreKind;
use sync_chaos::device::{Device, DeviceConfig};
use sync_chaos::server::{self, ServerDb};
use sync_chaos::{Event, FinalState, check, parse_history};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[test]
fn two_devices_converge_and_every_edit_applies_once() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let server_db = dir.path().join("server.db");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let running = runtime.block_on(server::start(
        "127.0.0.1:0".parse()?,
        ServerDb::Sqlite(server_db.clone()),
    ))?;
    let url = format!("http://{}", running.addr());
    let history = dir.path().join("history");
    let names = ["d1", "d2"];
    let mut devices = Vec::new();
    // One on each store; d2's clock is four minutes fast.
    for (name, store, skew_ms) in [
        ("d1", StoreKind::Sqlite, 0),
        ("d2", StoreKind::Wal, 240_000),
    ] {
        devices.push(Device::open(DeviceConfig {
            name: name.into(),
            db: dir.path().join(format!("{name}.db")),
            store,
            skew_ms,
            servers: vec![url.clone()],
            scopes: vec!["shared".into(), format!("own-{name}")],
            entities: 4,
            history: history.clone(),
        })?);
    }
    // Both edit at once: shared entities collide, own ones do not.
    std::thread::scope(|scope| -> Result<(), Error> {
        let handles: Vec<_> = devices
            .iter_mut()
            .zip(names)
            .map(|(device, name)| {
                scope.spawn(move || -> Result<(), Error> {
                    for i in 0..20 {
                        let scope = if i % 2 == 0 {
                            "shared".to_owned()
                        } else {
                            format!("own-{name}")
                        };
                        device.edit(&scope, i, &format!("{name}-{i}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().map_err(|_| "a device thread panicked")??;
        }
        Ok(())
    })?;
    // Each settles, then each pulls again to see the other's last edits.
    for _ in 0..2 {
        for device in &devices {
            device.settle(Duration::from_secs(30))?;
        }
    }
    let mut end = FinalState::default();
    for (device, name) in devices.iter().zip(names) {
        end.devices.insert(name.into(), device.data()?);
        end.entitled.insert(
            name.into(),
            BTreeSet::from(["shared".to_owned(), format!("own-{name}")]),
        );
    }
    for device in devices {
        device.stop()?;
    }
    drop(running);
    drop(runtime);
    let state = server::read_sqlite(&server_db)?;
    end.server = state.entities;
    let mut history = parse_history(&std::fs::read_to_string(&history)?);
    history.extend(state.effects.into_iter().map(|op| Event::Effect { op }));
    let verdict = check(&history, &end);
    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert_eq!(
        (verdict.acknowledged, verdict.effects),
        (40, 40),
        "{verdict:?}"
    );
    assert!(verdict.pulled > 0);
    Ok(())
}
