//! The recorded history of a chaos run and the checker that judges it
//! (Jepsen's approach: record what each party saw, then check it against
//! the promises, after the faults heal and everything drains).
//!
//! The promises checked, from the project's one promise:
//! - every locally acknowledged operation took effect on the server
//!   **exactly once** (none lost, none applied twice);
//! - no effect exists that no device acknowledged or attempted (an edit
//!   whose device died before its enqueue returned may or may not take
//!   effect, Jepsen's *indeterminate*: at most once);
//! - every device ends with the server's data for each of its scopes;
//! - no device ever pulled a scope it is not entitled to.

use std::collections::{BTreeMap, BTreeSet};

/// An entity's address in the data: its scope, and its id in that scope.
pub type EntityKey = (String, String);

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A device is about to enqueue `op`: if it dies before the matching
    /// [`Acknowledged`](Self::Acknowledged), the operation may or may not
    /// exist (and take effect, at most once).
    Attempted {
        /// The device.
        device: String,
        /// The operation's idempotency key.
        op: String,
    },
    /// A device's enqueue returned `Ok`: the operation is acknowledged
    /// locally and must reach the server, once.
    Acknowledged {
        /// The device.
        device: String,
        /// The operation's idempotency key.
        op: String,
    },
    /// The server holds the effect of operation `op` (one row of its
    /// effects table, read when the run is over: a duplicate is two rows).
    Effect {
        /// The operation's key.
        op: String,
    },
    /// A device applied a pulled change of `scope`.
    Pulled {
        /// The device.
        device: String,
        /// The change's scope.
        scope: String,
    },
}

/// The data at the end of a run, after the faults healed and every device
/// drained its queue and pulled to the end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinalState {
    /// The server's entities: key -> value.
    pub server: BTreeMap<EntityKey, String>,
    /// Each device's entities.
    pub devices: BTreeMap<String, BTreeMap<EntityKey, String>>,
    /// The scopes each device is entitled to.
    pub entitled: BTreeMap<String, BTreeSet<String>>,
}

/// A broken promise.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// An acknowledged operation has no effect on the server.
    Lost {
        /// The operation.
        op: String,
    },
    /// An operation's effect is on the server more than once.
    AppliedTwice {
        /// The operation.
        op: String,
        /// How many times.
        times: usize,
    },
    /// An effect of an operation no device acknowledged or attempted.
    Unacknowledged {
        /// The operation.
        op: String,
    },
    /// A device's data differs from the server's in one of its scopes.
    Diverged {
        /// The device.
        device: String,
        /// The entity.
        entity: EntityKey,
        /// The device's value (`None`: it lacks the entity).
        device_value: Option<String>,
        /// The server's value (`None`: the server lacks it).
        server_value: Option<String>,
    },
    /// A device pulled a scope it is not entitled to.
    ForeignScope {
        /// The device.
        device: String,
        /// The scope.
        scope: String,
    },
}

/// What the checker found, with the run's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Operations acknowledged by devices.
    pub acknowledged: usize,
    /// Operations attempted and never acknowledged (the device died in
    /// the enqueue): allowed to take effect at most once.
    pub indeterminate: usize,
    /// Effect rows on the server.
    pub effects: usize,
    /// Changes the devices pulled.
    pub pulled: usize,
    /// Every broken promise, sorted.
    pub problems: Vec<Problem>,
}

impl Verdict {
    /// Whether every promise held.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads a history file written by devices: one event per line,
/// `{device} try {op}`, `{device} ack {op}` or `{device} pulled {scope}`.
/// A line it does not know (a torn last line of a killed device cannot be
/// one: lines are single writes) is skipped.
#[must_use]
pub fn parse_history(text: &str) -> Vec<Event> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (device, what, arg) = (words.next()?, words.next()?, words.next()?);
            let (device, arg) = (device.to_owned(), arg.to_owned());
            match what {
                "try" => Some(Event::Attempted { device, op: arg }),
                "ack" => Some(Event::Acknowledged { device, op: arg }),
                "pulled" => Some(Event::Pulled { device, scope: arg }),
                _ => None,
            }
        })
        .collect()
}

/// Judges a run: `history` (in any order) against `end`.
///
/// # Examples
///
/// ```
/// use sync_chaos::{Event, FinalState, Problem, check};
///
/// let history = vec![
///     Event::Acknowledged { device: "d1".into(), op: "op1".into() },
///     Event::Effect { op: "op1".into() },
///     Event::Effect { op: "op1".into() },
/// ];
/// let verdict = check(&history, &FinalState::default());
/// assert_eq!(verdict.problems, [Problem::AppliedTwice { op: "op1".into(), times: 2 }]);
/// ```
#[must_use]
pub fn check(history: &[Event], end: &FinalState) -> Verdict {
    let mut verdict = Verdict::default();
    let mut acknowledged: BTreeSet<&str> = BTreeSet::new();
    let mut attempted: BTreeSet<&str> = BTreeSet::new();
    let mut effects: BTreeMap<&str, usize> = BTreeMap::new();
    let mut problems = BTreeSet::new();
    for event in history {
        match event {
            Event::Attempted { op, .. } => {
                attempted.insert(op);
            }
            Event::Acknowledged { op, .. } => {
                acknowledged.insert(op);
            }
            Event::Effect { op } => {
                verdict.effects += 1;
                *effects.entry(op).or_default() += 1;
            }
            Event::Pulled { device, scope } => {
                verdict.pulled += 1;
                let entitled = end
                    .entitled
                    .get(device)
                    .is_some_and(|scopes| scopes.contains(scope));
                if !entitled {
                    problems.insert(Problem::ForeignScope {
                        device: device.clone(),
                        scope: scope.clone(),
                    });
                }
            }
        }
    }
    verdict.acknowledged = acknowledged.len();
    verdict.indeterminate = attempted.difference(&acknowledged).count();
    for op in &acknowledged {
        match effects.get(op) {
            None => {
                problems.insert(Problem::Lost {
                    op: (*op).to_owned(),
                });
            }
            Some(&times) if times > 1 => {
                problems.insert(Problem::AppliedTwice {
                    op: (*op).to_owned(),
                    times,
                });
            }
            Some(_) => {}
        }
    }
    for (op, times) in &effects {
        if !acknowledged.contains(op) {
            if !attempted.contains(op) {
                problems.insert(Problem::Unacknowledged {
                    op: (*op).to_owned(),
                });
            }
            if *times > 1 {
                problems.insert(Problem::AppliedTwice {
                    op: (*op).to_owned(),
                    times: *times,
                });
            }
        }
    }
    for (device, data) in &end.devices {
        let scopes = end.entitled.get(device).cloned().unwrap_or_default();
        let keys: BTreeSet<&EntityKey> = end
            .server
            .keys()
            .chain(data.keys())
            .filter(|(scope, _)| scopes.contains(scope))
            .collect();
        for key in keys {
            let (mine, theirs) = (data.get(key), end.server.get(key));
            if mine != theirs {
                problems.insert(Problem::Diverged {
                    device: device.clone(),
                    entity: key.clone(),
                    device_value: mine.cloned(),
                    server_value: theirs.cloned(),
                });
            }
        }
        for (scope, _) in data.keys() {
            if !scopes.contains(scope) {
                problems.insert(Problem::ForeignScope {
                    device: device.clone(),
                    scope: scope.clone(),
                });
            }
        }
    }
    verdict.problems = problems.into_iter().collect();
    verdict
}

#[cfg(test)]
mod tests;
