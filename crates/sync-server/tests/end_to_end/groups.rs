//! All-or-nothing groups end to end: among the operations the engine sends,
//! transfer groups (a debit and a credit of the same amount between two of
//! eight accounts) go to `/sync/group`, which applies both members in the
//! key's transaction, writing one ledger row per member. Groups take the
//! same faults as the notes (duplicates raced to the other instance, acks
//! dropped, the batch format on PostgreSQL's second instance), and the
//! instance that is killed inside a note's transaction is first killed
//! inside a group's, between its debit and its credit.
//!
//! The check: every group has exactly its two ledger rows (none with one),
//! every group is there once, the ledger sums to zero and the balances to
//! what they started with.

use sync_outbox::Operation;
use sync_server::{GroupOperation, PostgresIdempotencyStore};

use super::Error;

/// One group per this many notes.
pub(super) const EVERY: usize = 10;
/// The group whose transaction the first instance is killed in.
pub(super) const KILL_AT: usize = 30;
/// Accounts, each starting with [`START`] cents.
pub(super) const ACCOUNTS: usize = 8;
pub(super) const START: i64 = 100_000;

/// The SQL that makes the accounts and the ledger (both stores).
pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS accounts (name TEXT PRIMARY KEY, \
     balance BIGINT NOT NULL);
     CREATE TABLE IF NOT EXISTS ledger (group_key TEXT NOT NULL, account TEXT NOT NULL, \
     delta BIGINT NOT NULL);
     INSERT INTO accounts (name, balance) VALUES ('acct0', 100000), ('acct1', 100000), \
     ('acct2', 100000), ('acct3', 100000), ('acct4', 100000), ('acct5', 100000), \
     ('acct6', 100000), ('acct7', 100000) ON CONFLICT DO NOTHING;";

/// Transfer `g`: `n` is its number among all operations (the fault
/// injection's), carried in each member's payload.
pub(super) fn transfer(g: usize, n: usize) -> Result<Operation, Error> {
    let from = g % ACCOUNTS;
    let to = (g * 3 + 1) % ACCOUNTS;
    let to = if to == from { (to + 1) % ACCOUNTS } else { to };
    let cents = 1 + g % 97;
    let payload = format!(r#"{{"n":{n},"g":{g},"cents":{cents}}}"#);
    Ok(Operation::group(
        "transfer",
        [
            Operation::new("debit", format!("/accounts/acct{from}"), payload.clone()),
            Operation::new("credit", format!("/accounts/acct{to}"), payload),
        ],
    )?)
}

/// `(account, signed cents, group number)` of a member.
pub(super) fn member(op: &GroupOperation) -> (String, i64, u64) {
    let value = serde_json::from_str::<serde_json::Value>(&op.payload).unwrap_or_default();
    let cents = value["cents"].as_i64().unwrap_or(0);
    let delta = if op.kind == "debit" { -cents } else { cents };
    let account = op.target.trim_start_matches("/accounts/").to_owned();
    (account, delta, value["g"].as_u64().unwrap_or(u64::MAX))
}

/// `(groups, ledger rows, groups without exactly two rows, ledger sum,
/// balance sum)`: the same SQL on both stores.
const LEDGER: &str = "SELECT (SELECT count(DISTINCT group_key) FROM ledger),
    (SELECT count(*) FROM ledger),
    (SELECT count(*) FROM (SELECT group_key FROM ledger GROUP BY group_key
        HAVING count(*) <> 2) AS odd),
    (SELECT CAST(coalesce(sum(delta), 0) AS BIGINT) FROM ledger),
    (SELECT CAST(coalesce(sum(balance), 0) AS BIGINT) FROM accounts)";

/// What the ledger holds.
#[derive(Debug)]
pub(super) struct Ledger {
    groups: i64,
    rows: i64,
    half: i64,
    sum: i64,
    balances: i64,
}

impl Ledger {
    /// Every one of `groups` groups whole and once, no money made or lost.
    pub(super) fn check(&self, groups: usize) -> Result<String, Error> {
        let want = i64::try_from(groups)?;
        let total = i64::try_from(ACCOUNTS)? * START;
        if self.groups != want || self.rows != 2 * want || self.half != 0 {
            return Err(format!("groups not all or nothing: {self:?}, {groups} sent").into());
        }
        if self.sum != 0 || self.balances != total {
            return Err(format!("money made or lost: {self:?}").into());
        }
        Ok(format!(
            "{} groups applied whole ({} ledger rows, none half), balances sum to {}",
            self.groups, self.rows, self.balances
        ))
    }
}

pub(super) fn sqlite_ledger(path: &std::path::Path) -> Result<Ledger, Error> {
    let db = sync_server::rusqlite::Connection::open(path)?;
    Ok(db.query_row(LEDGER, [], |r| {
        Ok(Ledger {
            groups: r.get(0)?,
            rows: r.get(1)?,
            half: r.get(2)?,
            sum: r.get(3)?,
            balances: r.get(4)?,
        })
    })?)
}

pub(super) fn postgres_ledger(conn: &str) -> Result<Ledger, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = PostgresIdempotencyStore::connect(conn, 1)?;
        let r = store.pool().get().await?.query_one(LEDGER, &[]).await?;
        Ok(Ledger {
            groups: r.get(0),
            rows: r.get(1),
            half: r.get(2),
            sum: r.get(3),
            balances: r.get(4),
        })
    })
}
