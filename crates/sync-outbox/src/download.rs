//! The download half on the device, without I/O: where the device is in the
//! server's change feed ([`DownloadState`]), which pulled changes wait for
//! the device's own operations ([`unreflected_keys`], [`plan_page`]), and
//! the traits a store and the app implement to apply a page
//! ([`DownloadTarget`], [`ApplyChanges`], [`DownloadStateStore`]).
//!
//! # The rule: a local edit is never written over before the server has it
//!
//! An operation is *unreflected* while it is `Pending`, `InFlight` or
//! `Failed`, and, once `Done`, while the version its answer named
//! ([`Operation::server_version`]) is not below the `covers_below` the
//! device has pulled to. A pulled change is *held* when its entity's
//! ordering key (the app's [`ApplyChanges::ordering_key`], by default
//! `"{entity}/{id}"`) is the `ordering_key` of an unreflected operation: it
//! is stored, not applied, and the local state stays as the app's edit made
//! it. When the entity's last unreflected operation is reflected (its
//! version covered, or it is discarded), the held change, the newest the
//! server sent, is applied: the device then shows the server's merged
//! result. A `Done` operation whose answer named no version changed nothing
//! the feed carries and holds nothing.
//!
//! Per entity, not per queue: a dead letter holds its own entity's changes
//! until it is retried or discarded, and nothing else.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
/// The pulled change types, from `sync-protocol`, for apps and stores that
/// implement the traits here.
pub use sync_protocol::{Change, ChangeOp, PullResponse};

use crate::error::OutboxError;
use crate::operation::{Operation, OperationStatus};
use crate::outbox::Outbox;

/// Where a device is in the server's change feed, stored with the data it
/// applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DownloadState {
    /// The last page's cursor; `None` before the first pull and after a
    /// restart: the next pull starts a snapshot.
    pub cursor: Option<String>,
    /// Every change of a version below this is in what the device pulled.
    pub covers_below: i64,
    /// The newest version pulled: a page below it is out of order.
    pub last_version: i64,
    /// Pulled changes waiting for the device's own operations, one per
    /// entity (the newest), in `(scope, entity, id)` order.
    pub held: Vec<HeldChange>,
    /// Between the first page of a snapshot and the page that ends it.
    pub in_snapshot: bool,
    /// Ordering keys the last snapshot's reset kept (the device had edits
    /// of them the server had not reflected) and no pulled change has
    /// mentioned since: once their operations are reflected and the
    /// snapshot is complete, the server has no such entity (deleted while
    /// the device was away), and the device's copy is forgotten
    /// ([`ApplyChanges::forget`]).
    pub verify: Vec<String>,
}

impl Default for DownloadState {
    fn default() -> Self {
        Self {
            cursor: None,
            covers_below: i64::MIN,
            last_version: i64::MIN,
            held: Vec::new(),
            in_snapshot: false,
            verify: Vec::new(),
        }
    }
}

impl DownloadState {
    /// Whether an operation answered with `version` is in what was pulled.
    #[must_use]
    pub fn covers(&self, version: i64) -> bool {
        version < self.covers_below
    }
}

/// A pulled change held back, and the ordering key it waits on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldChange {
    /// The ordering key of the operations it waits for.
    pub ordering_key: String,
    /// The change.
    pub change: Change,
}

/// Whether `op` keeps its entity's pulled changes held, at `covers_below`
/// (see the module's rule).
///
/// # Examples
///
/// ```
/// use sync_outbox::{Operation, OperationStatus, download::is_unreflected};
///
/// let done_at_41 = Operation { status: OperationStatus::Done, server_version: Some(41), ..Operation::default() };
/// assert!(is_unreflected(&done_at_41, 41), "a pull covering below 41 lacks it");
/// assert!(!is_unreflected(&done_at_41, 42));
/// assert!(is_unreflected(&Operation::default(), i64::MAX), "a pending edit always holds");
/// ```
#[must_use]
pub fn is_unreflected(op: &Operation, covers_below: i64) -> bool {
    match op.status {
        OperationStatus::Pending | OperationStatus::InFlight | OperationStatus::Failed => true,
        OperationStatus::Done => op.server_version.is_some_and(|v| v >= covers_below),
    }
}

/// The ordering keys of the unreflected operations among `ops`.
pub fn unreflected_keys<'a>(
    ops: impl IntoIterator<Item = &'a Operation>,
    covers_below: i64,
) -> HashSet<String> {
    ops.into_iter()
        .filter(|op| is_unreflected(op, covers_below))
        .filter_map(|op| op.ordering_key.clone())
        .collect()
}

/// The default ordering key of a pulled change's entity: `"{entity}/{id}"`.
/// Give an operation that edits the entity this `ordering_key`, and its
/// pulled changes wait for it.
#[must_use]
pub fn default_ordering_key(change: &Change) -> String {
    format!("{}/{}", change.entity, change.id)
}

/// What to do with one page (or, with no page, with the held changes).
/// It borrows the page's changes it applies, rather than copying them.
#[derive(Clone, Debug, PartialEq)]
pub struct PagePlan<'page> {
    /// `Some(keep)` when this page starts a snapshot: drop every entity the
    /// server gave before, except those whose ordering key is in `keep`
    /// (the device has edits of them the server has not reflected yet).
    pub reset: Option<HashSet<String>>,
    /// The changes to apply, in order: released held changes first, then
    /// the page's changes that are not held.
    pub apply: Vec<Cow<'page, Change>>,
    /// How many of `apply` were held before.
    pub released: usize,
    /// Ordering keys whose entities the server no longer has: the device
    /// drops its copies ([`ApplyChanges::forget`]), after `apply`.
    pub forget: Vec<String>,
    /// The state to store with them.
    pub next: DownloadState,
}

/// Plans a pulled page: checks it follows the stored state, then splits its
/// changes into those applied now and those held, and releases held changes
/// whose entity's operations are reflected now. `unreflected_at(c)` gives
/// the ordering keys of the unreflected operations at `covers_below` `c`
/// (read under the same lock the apply will hold); `key_of` maps a change to
/// its ordering key (`None`: never held).
///
/// # Errors
///
/// [`OutboxError::BadPage`] for a page that does not follow: an empty
/// cursor, versions that go back within the page or below the last version
/// pulled, a `covers_below` below the stored one (a cursor gone backwards).
/// Nothing is planned; the stored state stays. `unreflected_at`'s error.
pub fn plan_page<'page>(
    state: &DownloadState,
    page: &'page PullResponse,
    unreflected_at: impl FnOnce(i64) -> Result<HashSet<String>, OutboxError>,
    key_of: impl Fn(&Change) -> Option<String>,
) -> Result<PagePlan<'page>, OutboxError> {
    let starting = state.cursor.is_none();
    check_page(state, page, starting)?;
    let covers_below = if starting {
        page.covers_below
    } else {
        page.covers_below.max(state.covers_below)
    };
    let unreflected = unreflected_at(covers_below)?;
    // A snapshot brings the current state of every entity: what was held
    // before it is replaced by what it brings.
    let mut held: BTreeMap<(String, String, String), HeldChange> = if starting {
        BTreeMap::new()
    } else {
        state
            .held
            .iter()
            .map(|h| (entity_of(&h.change), h.clone()))
            .collect()
    };
    // A released change the page brings a newer one of is not applied at
    // all: applied first, a crash before the newer one would leave the
    // device showing the older server state over its own edit.
    let mut apply: Vec<Cow<'page, Change>> = release(&mut held, &unreflected)
        .into_iter()
        .map(Cow::Owned)
        .collect();
    if !apply.is_empty() {
        let in_page: HashSet<(String, String, String)> =
            page.changes.iter().map(entity_of).collect();
        apply.retain(|c| !in_page.contains(&entity_of(c)));
    }
    let released = apply.len();
    apply.reserve(page.changes.len());
    let mut verify: BTreeSet<String> = if starting {
        unreflected.iter().cloned().collect()
    } else {
        state.verify.iter().cloned().collect()
    };
    // The common page (no own edits waiting, nothing held) costs no key
    // and no lookup per change.
    let keyed = !unreflected.is_empty() || !verify.is_empty();
    for change in &page.changes {
        let key = if keyed { key_of(change) } else { None };
        if let Some(key) = &key {
            verify.remove(key);
        }
        match key {
            Some(key) if unreflected.contains(&key) => {
                held.insert(
                    entity_of(change),
                    HeldChange {
                        ordering_key: key,
                        change: change.clone(),
                    },
                );
            }
            _ => {
                if !held.is_empty() {
                    held.remove(&entity_of(change));
                }
                apply.push(Cow::Borrowed(change));
            }
        }
    }
    let last_version = page.changes.iter().map(|c| c.version).fold(
        if starting {
            i64::MIN
        } else {
            state.last_version
        },
        i64::max,
    );
    let in_snapshot = (starting || state.in_snapshot) && page.more;
    let forget = if in_snapshot {
        Vec::new()
    } else {
        settle(&mut verify, &unreflected)
    };
    Ok(PagePlan {
        reset: starting.then_some(unreflected),
        apply,
        released,
        forget,
        next: DownloadState {
            cursor: Some(page.cursor.clone()),
            covers_below,
            last_version,
            held: held.into_values().collect(),
            in_snapshot,
            verify: verify.into_iter().collect(),
        },
    })
}

/// Takes the keys to verify whose operations are reflected now: the server
/// has no entity for them.
fn settle(verify: &mut BTreeSet<String>, unreflected: &HashSet<String>) -> Vec<String> {
    let settled: Vec<String> = verify
        .iter()
        .filter(|key| !unreflected.contains(*key))
        .cloned()
        .collect();
    for key in &settled {
        verify.remove(key);
    }
    settled
}

/// Plans the release of held changes whose operations are reflected now
/// (after a push, a discard), without a page. `None` if nothing is
/// released.
#[must_use]
#[expect(
    clippy::implicit_hasher,
    reason = "the sets come from unreflected_keys, with the default hasher"
)]
pub fn plan_release(
    state: &DownloadState,
    unreflected: &HashSet<String>,
) -> Option<PagePlan<'static>> {
    let mut held: BTreeMap<(String, String, String), HeldChange> = state
        .held
        .iter()
        .map(|h| (entity_of(&h.change), h.clone()))
        .collect();
    let apply: Vec<Cow<'static, Change>> = release(&mut held, unreflected)
        .into_iter()
        .map(Cow::Owned)
        .collect();
    let mut verify: BTreeSet<String> = state.verify.iter().cloned().collect();
    let forget = if state.in_snapshot {
        Vec::new()
    } else {
        settle(&mut verify, unreflected)
    };
    if apply.is_empty() && forget.is_empty() {
        return None;
    }
    Some(PagePlan {
        reset: None,
        released: apply.len(),
        apply,
        forget,
        next: DownloadState {
            held: held.into_values().collect(),
            verify: verify.into_iter().collect(),
            ..state.clone()
        },
    })
}

/// Takes the held changes whose key is no longer unreflected, oldest
/// version first.
fn release(
    held: &mut BTreeMap<(String, String, String), HeldChange>,
    unreflected: &HashSet<String>,
) -> Vec<Change> {
    let free: Vec<(String, String, String)> = held
        .iter()
        .filter(|(_, h)| !unreflected.contains(&h.ordering_key))
        .map(|(id, _)| id.clone())
        .collect();
    let mut changes: Vec<Change> = free
        .iter()
        .filter_map(|id| held.remove(id))
        .map(|h| h.change)
        .collect();
    changes.sort_by_key(|c| c.version);
    changes
}

fn entity_of(change: &Change) -> (String, String, String) {
    (
        change.scope.clone(),
        change.entity.clone(),
        change.id.clone(),
    )
}

/// A page follows the stored state, or is refused whole.
fn check_page(
    state: &DownloadState,
    page: &PullResponse,
    starting: bool,
) -> Result<(), OutboxError> {
    let bad = |problem: String| Err(OutboxError::BadPage { problem });
    if page.cursor.is_empty() {
        return bad("the answer has no cursor".to_owned());
    }
    if let Some(pair) = page
        .changes
        .windows(2)
        .find(|w| w[1].version < w[0].version)
    {
        return bad(format!(
            "versions go back within the page ({} after {})",
            pair[1].version, pair[0].version
        ));
    }
    if !starting {
        if page.covers_below < state.covers_below {
            return bad(format!(
                "covers_below went back from {} to {} (a cursor gone backwards)",
                state.covers_below, page.covers_below
            ));
        }
        if let Some(first) = page.changes.first()
            && first.version < state.last_version
        {
            return bad(format!(
                "version {} after version {} was pulled",
                first.version, state.last_version
            ));
        }
    }
    Ok(())
}

/// The app's side of applying pulled changes to data that lives outside the
/// outbox's store (with the WAL and JSON stores; the SQLite store has its
/// own trait, applied in the store's transaction).
///
/// The download state is stored **after** `apply` returns, so a crash in
/// between applies the page again on restart: `upsert` and `delete` must be
/// idempotent. Keep each entity's `version` and skip a change whose version
/// is not newer (a change of the same version is the same change).
///
/// Called with the outbox held: do not call the outbox from here.
pub trait ApplyChanges: Send {
    /// The entity now has `state` (created or changed).
    ///
    /// # Errors
    ///
    /// Anything; the page is then not stored, and is pulled again.
    fn upsert(
        &mut self,
        change: &Change,
        state: &serde_json::Value,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// The entity is gone.
    ///
    /// # Errors
    ///
    /// As [`upsert`](Self::upsert).
    fn delete(&mut self, change: &Change) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// A snapshot starts: drop every entity the server gave, except those
    /// whose ordering key is in `keep` (the device's own edits the server
    /// has not reflected yet stay as they are).
    ///
    /// # Errors
    ///
    /// As [`upsert`](Self::upsert).
    fn reset(
        &mut self,
        keep: &HashSet<String>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// The server has no entity under `ordering_key` any more: a snapshot's
    /// reset kept the device's copy (it had edits the server had not
    /// reflected), the snapshot did not bring it (deleted on the server
    /// while the device was away), and those edits are settled now. Drop
    /// the device's copy.
    ///
    /// # Errors
    ///
    /// As [`upsert`](Self::upsert).
    fn forget(
        &mut self,
        ordering_key: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// Called once after a page's (or a release's) changes are applied,
    /// before the cursor is stored: the place to make the app's writes
    /// durable once per page (an fsync, a commit) rather than per change.
    /// The cursor is stored only if this returns `Ok`, so a page whose
    /// writes may not have reached the disk is pulled and applied again.
    /// Default: nothing.
    ///
    /// # Errors
    ///
    /// As [`upsert`](Self::upsert).
    fn finish_page(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }

    /// The ordering key the device's operations on `change`'s entity carry;
    /// `None`: its changes are never held. Default
    /// [`default_ordering_key`].
    fn ordering_key(&self, change: &Change) -> Option<String> {
        Some(default_ordering_key(change))
    }
}

/// Where a store keeps a [`DownloadState`] that lives beside the app's
/// data, not in the same transaction.
pub trait DownloadStateStore: Send + Sync + fmt::Debug {
    /// The stored state (the default one if none is stored).
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    fn load(&self) -> Result<DownloadState, OutboxError>;

    /// Replaces the stored state. Durable on `Ok` as the store promises.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    fn save(&self, state: &DownloadState) -> Result<(), OutboxError>;
}

/// A [`DownloadStateStore`] in memory: for tests and simulations.
#[derive(Debug, Default)]
pub struct MemoryDownloadState {
    state: Mutex<DownloadState>,
}

impl DownloadStateStore for MemoryDownloadState {
    fn load(&self) -> Result<DownloadState, OutboxError> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    fn save(&self, state: &DownloadState) -> Result<(), OutboxError> {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state.clone();
        Ok(())
    }
}

/// What a commit did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// Changes applied (released ones included).
    pub applied: usize,
    /// Of those, changes that had been held.
    pub released: usize,
    /// Changes held after it.
    pub held: usize,
    /// Whether it started a snapshot (the app reset its data).
    pub reset: bool,
    /// The `covers_below` stored.
    pub covers_below: i64,
}

/// Where pulled pages go: a store and the app's apply, committed together
/// where the store can. Implemented by [`AppDownload`] (the app's data
/// beside the store) and by the SQLite store's download (the app's rows,
/// the page and the cursor in one transaction).
pub trait DownloadTarget: Send + Sync + fmt::Debug {
    /// The stored state.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    fn state(&self) -> Result<DownloadState, OutboxError>;

    /// Plans `page` ([`plan_page`]) and applies it: the app's changes and
    /// the next state, atomically where the store can.
    ///
    /// # Errors
    ///
    /// [`OutboxError::BadPage`] (nothing applied, the state unchanged);
    /// [`OutboxError::Apply`] for the app's error (rolled back where the
    /// store can; the state unchanged); [`OutboxError::Store`].
    fn commit_page(&self, page: &PullResponse) -> Result<Committed, OutboxError>;

    /// Applies the held changes whose operations are reflected now
    /// ([`plan_release`]).
    ///
    /// # Errors
    ///
    /// As [`commit_page`](Self::commit_page), but for `BadPage`.
    fn release(&self) -> Result<Committed, OutboxError>;

    /// Forgets the cursor (and the held changes, which the snapshot brings
    /// again): the next pull starts a snapshot. For a cursor the server
    /// refuses.
    ///
    /// # Errors
    ///
    /// [`OutboxError::Store`].
    fn restart(&self) -> Result<(), OutboxError>;
}

/// A [`DownloadTarget`] for an app whose data lives beside the outbox's
/// store (WAL, JSON, memory): the app applies a page through
/// [`ApplyChanges`], then the state is saved to a
/// [`DownloadStateStore`]. The two are not one transaction: a crash in
/// between applies the page again, which [`ApplyChanges`] must tolerate.
///
/// Holds the outbox (see [`Outbox::lock_for_transaction`]) from reading
/// which operations are unreflected to saving the state, so no enqueue
/// slips between the rule and the apply.
///
/// # Examples
///
/// ```
/// use std::collections::{HashMap, HashSet};
/// use std::sync::Arc;
/// use sync_outbox::download::{AppDownload, ApplyChanges, DownloadTarget, MemoryDownloadState};
/// use sync_outbox::{MemoryOutboxStore, Outbox, OutboxConfig};
/// use sync_protocol::{Change, PullResponse};
///
/// #[derive(Default)]
/// struct Notes(HashMap<String, (i64, serde_json::Value)>);
/// type Error = Box<dyn std::error::Error + Send + Sync>;
/// impl ApplyChanges for Notes {
///     fn upsert(&mut self, c: &Change, state: &serde_json::Value) -> Result<(), Error> {
///         let newer = self.0.get(&c.id).is_none_or(|(v, _)| *v < c.version);
///         if newer { self.0.insert(c.id.clone(), (c.version, state.clone())); }
///         Ok(())
///     }
///     fn delete(&mut self, c: &Change) -> Result<(), Error> { self.0.remove(&c.id); Ok(()) }
///     fn reset(&mut self, keep: &HashSet<String>) -> Result<(), Error> {
///         self.0.retain(|id, _| keep.contains(&format!("note/{id}")));
///         Ok(())
///     }
///     fn forget(&mut self, key: &str) -> Result<(), Error> {
///         if let Some(id) = key.strip_prefix("note/") { self.0.remove(id); }
///         Ok(())
///     }
/// }
///
/// let outbox = Arc::new(Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new())));
/// let download = AppDownload::new(outbox, Notes::default(), Arc::new(MemoryDownloadState::default()));
/// let page: PullResponse = serde_json::from_str(r#"{"changes":[{"scope":"u","entity":"note","id":"1",
///     "version":7,"op":"upsert","state":{"text":"hi"}}],"cursor":"c1","more":false,"covers_below":8,"snapshot":true}"#)?;
/// let done = download.commit_page(&page)?;
/// assert_eq!((done.applied, done.reset), (1, true));
/// assert_eq!(download.state()?.cursor.as_deref(), Some("c1"));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub struct AppDownload<A> {
    outbox: Arc<Outbox>,
    app: Mutex<A>,
    state: Arc<dyn DownloadStateStore>,
}

impl<A> fmt::Debug for AppDownload<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppDownload")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<A: ApplyChanges> AppDownload<A> {
    /// Applies pages to `app`, keeping the state in `state`; the rule reads
    /// `outbox`'s operations.
    pub fn new(outbox: Arc<Outbox>, app: A, state: Arc<dyn DownloadStateStore>) -> Self {
        Self {
            outbox,
            app: Mutex::new(app),
            state,
        }
    }

    /// The app, for reading what it holds (tests, a UI).
    pub fn app(&self) -> std::sync::MutexGuard<'_, A> {
        self.app.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply(&self, app: &mut A, plan: &PagePlan<'_>) -> Result<(), OutboxError> {
        let apply_error = |source| OutboxError::Apply { source };
        if let Some(keep) = &plan.reset {
            app.reset(keep).map_err(apply_error)?;
        }
        for change in &plan.apply {
            match &change.op {
                ChangeOp::Upsert { state } => app.upsert(change, state),
                ChangeOp::Delete => app.delete(change),
            }
            .map_err(apply_error)?;
        }
        for key in &plan.forget {
            app.forget(key).map_err(apply_error)?;
        }
        app.finish_page().map_err(apply_error)?;
        self.state.save(&plan.next)
    }
}

impl<A: ApplyChanges> DownloadTarget for AppDownload<A> {
    fn state(&self) -> Result<DownloadState, OutboxError> {
        self.state.load()
    }

    fn commit_page(&self, page: &PullResponse) -> Result<Committed, OutboxError> {
        let _held = self.outbox.lock_for_transaction()?;
        let state = self.state.load()?;
        let mut app = self.app();
        let store = self.outbox.store();
        let plan = plan_page(
            &state,
            page,
            |covers| Ok(unreflected_keys(&store.load_all()?, covers)),
            |c| app.ordering_key(c),
        )?;
        self.apply(&mut app, &plan)?;
        Ok(committed(&plan))
    }

    fn release(&self) -> Result<Committed, OutboxError> {
        let _held = self.outbox.lock_for_transaction()?;
        let state = self.state.load()?;
        let unreflected = unreflected_keys(&self.outbox.store().load_all()?, state.covers_below);
        let Some(plan) = plan_release(&state, &unreflected) else {
            return Ok(Committed {
                held: state.held.len(),
                covers_below: state.covers_below,
                ..Committed::default()
            });
        };
        self.apply(&mut self.app(), &plan)?;
        Ok(committed(&plan))
    }

    fn restart(&self) -> Result<(), OutboxError> {
        let _held = self.outbox.lock_for_transaction()?;
        self.state.save(&DownloadState::default())
    }
}

/// What `plan` did, as a [`Committed`].
#[must_use]
pub fn committed(plan: &PagePlan<'_>) -> Committed {
    Committed {
        applied: plan.apply.len(),
        released: plan.released,
        held: plan.next.held.len(),
        reset: plan.reset.is_some(),
        covers_below: plan.next.covers_below,
    }
}

#[cfg(test)]
mod tests;
