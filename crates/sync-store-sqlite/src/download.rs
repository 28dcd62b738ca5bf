//! [`SqliteDownload`]: pulled pages applied to the app's own tables, in the
//! same SQLite transaction as the cursor and the held changes, so a crash
//! re-applies nothing half and skips nothing.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sync_outbox::download::{
    Committed, DownloadState, DownloadTarget, HeldChange, PagePlan, committed,
    default_ordering_key, plan_page, plan_release,
};
use sync_outbox::{Outbox, OutboxError};
use sync_protocol::{Change, ChangeOp, PullResponse};

use crate::error::{SqliteStoreError, sql};
use crate::store::SqliteOutboxStore;

/// The app's side of applying pulled changes to its own tables, inside the
/// store's transaction: every call gets the transaction's connection, and
/// whatever it writes commits with the page's other changes, the new
/// cursor and the held changes, or not at all.
///
/// # Examples
///
/// ```
/// use std::collections::HashSet;
/// use sync_store_sqlite::ApplySqliteChanges;
/// use sync_store_sqlite::rusqlite::{Connection, Result};
/// use sync_protocol::Change;
///
/// struct Notes;
///
/// impl ApplySqliteChanges for Notes {
///     fn upsert(&mut self, db: &Connection, change: &Change, state: &serde_json::Value) -> Result<()> {
///         db.execute(
///             "INSERT INTO notes (id, text) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET text = excluded.text",
///             (&change.id, state["text"].as_str().unwrap_or("")),
///         )?;
///         Ok(())
///     }
///     fn delete(&mut self, db: &Connection, change: &Change) -> Result<()> {
///         db.execute("DELETE FROM notes WHERE id = ?1", [&change.id]).map(drop)
///     }
///     fn reset(&mut self, db: &Connection, keep: &HashSet<String>) -> Result<()> {
///         // Every note the server gave, except those with local edits not
///         // yet reflected (ordering key "note/{id}").
///         let mut stmt = db.prepare("SELECT id FROM notes")?;
///         let ids: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_>>()?;
///         for id in ids.iter().filter(|id| !keep.contains(&format!("note/{id}"))) {
///             db.execute("DELETE FROM notes WHERE id = ?1", [id])?;
///         }
///         Ok(())
///     }
///     fn forget(&mut self, db: &Connection, key: &str) -> Result<()> {
///         let id = key.strip_prefix("note/").unwrap_or(key);
///         db.execute("DELETE FROM notes WHERE id = ?1", [id]).map(drop)
///     }
/// }
/// # let _ = Notes;
/// ```
pub trait ApplySqliteChanges: Send {
    /// The entity now has `state` (created or changed).
    ///
    /// # Errors
    ///
    /// SQLite's; the page is then rolled back whole, and pulled again.
    fn upsert(
        &mut self,
        db: &Connection,
        change: &Change,
        state: &serde_json::Value,
    ) -> rusqlite::Result<()>;

    /// The entity is gone.
    ///
    /// # Errors
    ///
    /// As [`upsert`](Self::upsert).
    fn delete(&mut self, db: &Connection, change: &Change) -> rusqlite::Result<()>;

    /// A snapshot starts: drop every entity the server gave, except those
    /// whose ordering key is in `keep` (the device's own edits the server
    /// has not reflected yet stay as they are).
    ///
    /// # Errors
    ///
    /// As [`upsert`](Self::upsert).
    fn reset(&mut self, db: &Connection, keep: &HashSet<String>) -> rusqlite::Result<()>;

    /// The server has no entity under `ordering_key` any more: a snapshot's
    /// reset kept the device's copy (it had edits the server had not
    /// reflected), the snapshot did not bring it (deleted on the server
    /// while the device was away), and those edits are settled now. Drop
    /// the device's copy.
    ///
    /// # Errors
    ///
    /// As [`upsert`](Self::upsert).
    fn forget(&mut self, db: &Connection, ordering_key: &str) -> rusqlite::Result<()>;

    /// Applies a page's changes, in the order the server sent them: by
    /// default each through [`upsert`](Self::upsert) or
    /// [`delete`](Self::delete). Override it to prepare each statement
    /// once per page rather than once per change (a page is hundreds of
    /// changes; `prepare_cached` per change costs a cache lookup and a
    /// statement reset each time).
    ///
    /// # Errors
    ///
    /// As [`upsert`](Self::upsert).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::collections::HashSet;
    /// # use rusqlite::{Connection, Result};
    /// # use sync_store_sqlite::ApplySqliteChanges;
    /// # use sync_outbox::download::{Change, ChangeOp};
    /// struct Notes;
    ///
    /// impl ApplySqliteChanges for Notes {
    ///     fn apply_changes(&mut self, db: &Connection, changes: &[&Change]) -> Result<()> {
    ///         let mut upsert = db.prepare_cached(
    ///             "INSERT INTO notes (id, text) VALUES (?1, ?2) \
    ///              ON CONFLICT (id) DO UPDATE SET text = excluded.text",
    ///         )?;
    ///         let mut delete = db.prepare_cached("DELETE FROM notes WHERE id = ?1")?;
    ///         for change in changes {
    ///             match &change.op {
    ///                 ChangeOp::Upsert { state } => upsert.execute((&change.id, state["text"].as_str()))?,
    ///                 ChangeOp::Delete => delete.execute([&change.id])?,
    ///             };
    ///         }
    ///         Ok(())
    ///     }
    /// #   fn upsert(&mut self, db: &Connection, c: &Change, _: &serde_json::Value) -> Result<()> { self.apply_changes(db, &[c]) }
    /// #   fn delete(&mut self, db: &Connection, c: &Change) -> Result<()> { self.apply_changes(db, &[c]) }
    /// #   fn reset(&mut self, _db: &Connection, _keep: &HashSet<String>) -> Result<()> { Ok(()) }
    /// #   fn forget(&mut self, _db: &Connection, _key: &str) -> Result<()> { Ok(()) }
    /// }
    /// # let _ = Notes;
    /// ```
    fn apply_changes(&mut self, db: &Connection, changes: &[&Change]) -> rusqlite::Result<()> {
        for change in changes {
            match &change.op {
                ChangeOp::Upsert { state } => self.upsert(db, change, state)?,
                ChangeOp::Delete => self.delete(db, change)?,
            }
        }
        Ok(())
    }

    /// The ordering key the device's operations on `change`'s entity carry;
    /// `None`: its changes are never held. Default `"{entity}/{id}"`
    /// ([`default_ordering_key`]).
    fn ordering_key(&self, change: &Change) -> Option<String> {
        Some(default_ordering_key(change))
    }
}

/// A [`DownloadTarget`] on the SQLite store: each pulled page, the app's
/// writes for it ([`ApplySqliteChanges`]), the cursor and the held changes
/// commit in one transaction of the store's database (durable as the
/// store's `SyncPolicy` promises). A crash before the commit leaves the page
/// unapplied and the cursor where it was; after it, both moved. So the
/// app's apply need not be idempotent.
///
/// Which pulled changes wait for local operations is read from
/// `sync_outbox` in the same transaction, with the outbox held (as
/// [`SqliteTransaction`](crate::SqliteTransaction) does): an app's edit and
/// its operation, committed together, can never fall between the rule and
/// the apply.
///
/// # Examples
///
/// ```
/// # use std::collections::HashSet;
/// # use sync_store_sqlite::rusqlite::{Connection, Result};
/// # use sync_protocol::Change;
/// # struct Notes;
/// # impl sync_store_sqlite::ApplySqliteChanges for Notes {
/// #     fn upsert(&mut self, db: &Connection, c: &Change, s: &serde_json::Value) -> Result<()> {
/// #         db.execute("INSERT OR REPLACE INTO notes VALUES (?1, ?2)", (&c.id, s.to_string())).map(drop)
/// #     }
/// #     fn delete(&mut self, db: &Connection, c: &Change) -> Result<()> { db.execute("DELETE FROM notes WHERE id = ?1", [&c.id]).map(drop) }
/// #     fn reset(&mut self, _db: &Connection, _keep: &HashSet<String>) -> Result<()> { Ok(()) }
/// #     fn forget(&mut self, _db: &Connection, _key: &str) -> Result<()> { Ok(()) }
/// # }
/// use std::sync::Arc;
/// use sync_outbox::{Outbox, OutboxConfig, download::DownloadTarget};
/// use sync_store_sqlite::{SqliteDownload, SqliteOutboxStore, SqliteOutboxStoreConfig};
///
/// let dir = tempfile::tempdir()?;
/// let store = Arc::new(SqliteOutboxStore::open(SqliteOutboxStoreConfig::new(dir.path().join("app.db")))?);
/// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), store.clone()));
/// store.with_transaction(&outbox, |tx| -> Result<(), Box<dyn std::error::Error>> {
///     Ok(tx.execute_batch("CREATE TABLE notes (id TEXT PRIMARY KEY, state TEXT)")?)
/// })?;
///
/// let download = SqliteDownload::new(store.clone(), outbox, Notes);
/// let page = serde_json::from_str(r#"{"changes":[{"scope":"u","entity":"note","id":"n1","version":3,
///     "op":"upsert","state":{"text":"hi"}}],"cursor":"c1","more":false,"covers_below":4,"snapshot":true}"#)?;
/// assert_eq!(download.commit_page(&page)?.applied, 1);
/// assert_eq!(download.state()?.cursor.as_deref(), Some("c1"));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub struct SqliteDownload<A> {
    store: Arc<SqliteOutboxStore>,
    outbox: Arc<Outbox>,
    app: Mutex<A>,
}

impl<A> std::fmt::Debug for SqliteDownload<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDownload")
            .field("path", &self.store.path())
            .finish_non_exhaustive()
    }
}

impl<A: ApplySqliteChanges> SqliteDownload<A> {
    /// Applies pulled pages to the database of `store` through `app`;
    /// `outbox` is the outbox over `store`.
    pub fn new(store: Arc<SqliteOutboxStore>, outbox: Arc<Outbox>, app: A) -> Self {
        Self {
            store,
            outbox,
            app: Mutex::new(app),
        }
    }

    /// Runs `step` in one `BEGIN IMMEDIATE` transaction on the store's app
    /// connection, with the outbox held first (the order every writer of
    /// this database takes them in).
    fn in_transaction<'page, T>(
        &self,
        step: impl FnOnce(&Connection, &mut A) -> Result<(T, Option<PagePlan<'page>>), OutboxError>,
    ) -> Result<T, OutboxError> {
        let _held = self.outbox.lock_for_transaction()?;
        let path = self.store.path();
        let mut conn = self.store.app_connection();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql("begin a download transaction on", path, e))?;
        let mut app = self.app.lock().unwrap_or_else(PoisonError::into_inner);
        let (result, plan) = step(&tx, &mut app)?;
        if let Some(plan) = plan {
            apply(&tx, &mut *app, &plan)?;
            write_state(&tx, &plan.next, path)?;
        }
        tx.commit()
            .map_err(|e| OutboxError::from(sql("commit a pulled page to", path, e)))?;
        Ok(result)
    }
}

impl<A: ApplySqliteChanges> DownloadTarget for SqliteDownload<A> {
    fn state(&self) -> Result<DownloadState, OutboxError> {
        let conn = self.store.app_connection();
        Ok(read_state(&conn, self.store.path())?)
    }

    fn commit_page(&self, page: &PullResponse) -> Result<Committed, OutboxError> {
        let path = self.store.path().to_path_buf();
        self.in_transaction(|tx, app| {
            let state = read_state(tx, &path)?;
            let plan = plan_page(
                &state,
                page,
                |covers| Ok(unreflected_in(tx, covers, &path)?),
                |c| app.ordering_key(c),
            )?;
            Ok((committed(&plan), Some(plan)))
        })
    }

    fn release(&self) -> Result<Committed, OutboxError> {
        let path = self.store.path().to_path_buf();
        self.in_transaction(|tx, _app| {
            let state = read_state(tx, &path)?;
            let unreflected = unreflected_in(tx, state.covers_below, &path)?;
            Ok(match plan_release(&state, &unreflected) {
                Some(plan) => (committed(&plan), Some(plan)),
                None => (
                    Committed {
                        held: state.held.len(),
                        covers_below: state.covers_below,
                        ..Committed::default()
                    },
                    None,
                ),
            })
        })
    }

    fn restart(&self) -> Result<(), OutboxError> {
        let path = self.store.path().to_path_buf();
        self.in_transaction(|tx, _app| {
            write_state(tx, &DownloadState::default(), &path)?;
            Ok(((), None))
        })
    }
}

/// Runs the app's writes for `plan`.
fn apply<A: ApplySqliteChanges + ?Sized>(
    tx: &Connection,
    app: &mut A,
    plan: &PagePlan<'_>,
) -> Result<(), OutboxError> {
    let apply_error = |e: rusqlite::Error| OutboxError::Apply {
        source: Box::new(e),
    };
    if let Some(keep) = &plan.reset {
        app.reset(tx, keep).map_err(apply_error)?;
    }
    let changes: Vec<&Change> = plan.apply.iter().map(AsRef::as_ref).collect();
    app.apply_changes(tx, &changes).map_err(apply_error)?;
    for key in &plan.forget {
        app.forget(tx, key).map_err(apply_error)?;
    }
    Ok(())
}

/// The ordering keys of the operations that hold pulled changes at
/// `covers_below` (see `sync_outbox::download`), read in `tx`.
fn unreflected_in(
    tx: &Connection,
    covers_below: i64,
    path: &Path,
) -> Result<HashSet<String>, SqliteStoreError> {
    let mut statement = tx
        .prepare_cached(
            "SELECT DISTINCT ordering_key FROM sync_outbox WHERE ordering_key IS NOT NULL \
             AND (status <> 'done' OR server_version >= ?1)",
        )
        .map_err(|e| sql("read the unreflected operations of", path, e))?;
    statement
        .query_map([covers_below], |row| row.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| sql("read the unreflected operations of", path, e))
}

/// The download state stored in `conn`'s database.
pub(crate) fn read_state(
    conn: &Connection,
    path: &Path,
) -> Result<DownloadState, SqliteStoreError> {
    let read = |e| sql("read the download state of", path, e);
    let value = |key: &str| -> Result<Option<String>, SqliteStoreError> {
        conn.prepare_cached("SELECT value FROM sync_download WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
            .map_err(read)
    };
    let number = |key: &'static str| -> Result<i64, SqliteStoreError> {
        value(key)?.map_or(Ok(i64::MIN), |text| {
            text.parse().map_err(|_| SqliteStoreError::InvalidRow {
                path: path.to_path_buf(),
                id: key.to_owned(),
                column: "sync_download.value",
            })
        })
    };
    let mut statement = conn
        .prepare_cached(
            "SELECT scope, entity, id, ordering_key, version, state FROM sync_held \
             ORDER BY scope, entity, id",
        )
        .map_err(read)?;
    let rows: Vec<(String, String, String, String, i64, Option<String>)> = statement
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .and_then(|rows| rows.collect())
        .map_err(read)?;
    let mut held = Vec::with_capacity(rows.len());
    for (scope, entity, id, ordering_key, version, state) in rows {
        let op = match state {
            None => ChangeOp::Delete,
            Some(text) => ChangeOp::Upsert {
                state: serde_json::from_str(&text).map_err(|_| SqliteStoreError::InvalidRow {
                    path: path.to_path_buf(),
                    id: format!("{scope}/{entity}/{id}"),
                    column: "sync_held.state",
                })?,
            },
        };
        held.push(HeldChange {
            ordering_key,
            change: Change {
                scope,
                entity,
                id,
                version,
                op,
            },
        });
    }
    let verify = value("verify")?.unwrap_or_default();
    Ok(DownloadState {
        cursor: value("cursor")?,
        covers_below: number("covers_below")?,
        last_version: number("last_version")?,
        held,
        in_snapshot: value("in_snapshot")?.as_deref() == Some("1"),
        verify: verify.lines().map(str::to_owned).collect(),
    })
}

/// Replaces the stored download state, in `tx`.
fn write_state(tx: &Connection, state: &DownloadState, path: &Path) -> Result<(), OutboxError> {
    let write = |e| OutboxError::from(sql("write the download state of", path, e));
    let mut set = tx
        .prepare_cached(
            "INSERT INTO sync_download (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .map_err(write)?;
    match &state.cursor {
        Some(cursor) => set.execute(params!["cursor", cursor]).map(drop),
        None => tx
            .execute("DELETE FROM sync_download WHERE key = 'cursor'", [])
            .map(drop),
    }
    .map_err(write)?;
    set.execute(params!["covers_below", state.covers_below.to_string()])
        .map_err(write)?;
    set.execute(params!["last_version", state.last_version.to_string()])
        .map_err(write)?;
    set.execute(params![
        "in_snapshot",
        if state.in_snapshot { "1" } else { "0" }
    ])
    .map_err(write)?;
    // One key per line: ordering keys the app makes have no line breaks
    // (a key with one would be split; it is then verified as two).
    set.execute(params!["verify", state.verify.join("\n")])
        .map_err(write)?;
    tx.execute("DELETE FROM sync_held", []).map_err(write)?;
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO sync_held (scope, entity, id, ordering_key, version, state) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(write)?;
    for held in &state.held {
        let change = &held.change;
        let text = match &change.op {
            ChangeOp::Upsert { state } => Some(state.to_string()),
            ChangeOp::Delete => None,
        };
        insert
            .execute(params![
                change.scope,
                change.entity,
                change.id,
                held.ordering_key,
                change.version,
                text
            ])
            .map_err(write)?;
    }
    Ok(())
}

impl SqliteOutboxStore {
    /// The download state (cursor, `covers_below`, held changes) of the
    /// store at `path`, read without changing it, beside a running app
    /// (one read transaction): for `synctl`. The default state if the
    /// database has no download tables yet.
    ///
    /// # Errors
    ///
    /// As [`SqliteOutboxStore::load_read_only`].
    pub fn download_state_read_only(path: &Path) -> Result<DownloadState, SqliteStoreError> {
        let mut conn = crate::store::read_only_connection(path)?;
        let snapshot = conn
            .transaction()
            .map_err(|e| sql("start a read of", path, e))?;
        let has_tables: bool = snapshot
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'sync_held'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| sql("read the schema of", path, e))?;
        if !has_tables {
            return Ok(DownloadState::default());
        }
        read_state(&snapshot, path)
    }
}

#[cfg(test)]
mod tests;
