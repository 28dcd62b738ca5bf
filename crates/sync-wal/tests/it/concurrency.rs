//! Guards that `Wal` is shared safely: concurrent appenders (with group commit
//! under `Always`) get unique, contiguous LSNs and every record is readable.

use std::collections::BTreeSet;
use std::sync::Arc;

use sync_wal::{SyncPolicy, Wal};

use crate::{TestResult, config, read_all, record};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn wal_is_send_and_sync() {
    assert_send_sync::<Wal>();
}

#[test]
fn concurrent_appenders_get_unique_contiguous_lsns() -> TestResult {
    for policy in [SyncPolicy::Always, SyncPolicy::Never] {
        let dir = tempfile::tempdir()?;
        let mut cfg = config(dir.path());
        cfg.sync = policy;
        cfg.segment_bytes = 4096;
        let wal = Arc::new(Wal::open(cfg.clone())?);
        let n_threads = 8u64;
        let per_thread = 25u64;
        let handles: Vec<_> = (0..n_threads)
            .map(|t| {
                let wal = Arc::clone(&wal);
                std::thread::spawn(move || {
                    (0..per_thread)
                        .map(|i| {
                            wal.append(&record(t * 1000 + i))
                                .map(|lsn| (lsn, t * 1000 + i))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut acked = Vec::new();
        for handle in handles {
            acked.extend(handle.join().map_err(|_| "appender panicked")??);
        }
        let lsns: BTreeSet<u64> = acked.iter().map(|(lsn, _)| *lsn).collect();
        assert_eq!(
            lsns,
            (0..n_threads * per_thread).collect::<BTreeSet<_>>(),
            "{policy:?}"
        );
        drop(wal);
        let wal = Wal::open(cfg)?;
        let items = read_all(&wal)?;
        for (lsn, n) in acked {
            assert_eq!(items[usize::try_from(lsn)?].1, record(n));
        }
    }
    Ok(())
}
