//! The plan of the stats query: lookups, never a pass over the operations.

use rusqlite::Connection;

use super::{BYTES, COUNTS, CREATE, STATS_QUERY};

#[test]
fn the_stats_query_looks_up_and_never_scans_the_operations() -> rusqlite::Result<()> {
    let conn = Connection::open_in_memory()?;
    conn.execute_batch(CREATE)?;
    conn.execute_batch(COUNTS)?;
    conn.execute_batch(BYTES)?;
    let plan: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {STATS_QUERY}"))?
        .query_map([], |row| row.get::<_, String>(3))?
        .collect::<rusqlite::Result<_>>()?;
    let on_outbox: Vec<&String> = plan
        .iter()
        .filter(|step| step.contains("sync_outbox "))
        .collect();
    assert!(
        on_outbox
            .iter()
            .all(|step| step.contains("INDEX sync_outbox_pending_age")),
        "{plan:?}"
    );
    assert!(!on_outbox.is_empty(), "{plan:?}");
    Ok(())
}
