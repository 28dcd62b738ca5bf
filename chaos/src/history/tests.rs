//! The checker against generated runs: a run that keeps every promise
//! passes, and each kind of broken promise injected into one is reported,
//! as that kind.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::{Event, FinalState, Problem, check};

/// A run that keeps every promise: `ops[i]` acknowledged by device
/// `i % devices`, applied once; each device entitled to its own scope and
/// the shared one, holding the server's data of those scopes.
fn honest(ops: usize, devices: usize, values: &[u8]) -> (Vec<Event>, FinalState) {
    let mut history = Vec::new();
    let mut end = FinalState::default();
    for d in 0..devices {
        let scopes: BTreeSet<String> = ["shared".to_owned(), format!("own{d}")].into();
        end.entitled.insert(format!("d{d}"), scopes);
    }
    for i in 0..ops {
        let device = format!("d{}", i % devices);
        let op = format!("op{i}");
        history.push(Event::Acknowledged {
            device: device.clone(),
            op: op.clone(),
        });
        history.push(Event::Effect { op });
        let scope = if i % 2 == 0 {
            "shared".to_owned()
        } else {
            format!("own{}", i % devices)
        };
        let value = values
            .get(i % values.len().max(1))
            .copied()
            .unwrap_or(0)
            .to_string();
        end.server
            .insert((scope.clone(), format!("e{}", i % 5)), value);
        history.push(Event::Pulled { device, scope });
    }
    for d in 0..devices {
        let device = format!("d{d}");
        let scopes = end.entitled.get(&device).cloned().unwrap_or_default();
        let data: BTreeMap<_, _> = end
            .server
            .iter()
            .filter(|((scope, _), _)| scopes.contains(scope))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        end.devices.insert(device, data);
    }
    (history, end)
}

proptest! {
    #[test]
    fn an_honest_run_passes(ops in 1usize..40, devices in 1usize..5, values in proptest::collection::vec(any::<u8>(), 1..8)) {
        let (history, end) = honest(ops, devices, &values);
        let verdict = check(&history, &end);
        prop_assert!(verdict.passed(), "{:?}", verdict.problems);
        prop_assert_eq!(verdict.acknowledged, ops);
        prop_assert_eq!(verdict.effects, ops);
    }

    #[test]
    fn each_broken_promise_is_reported_as_itself(ops in 2usize..40, devices in 1usize..5, pick in any::<usize>(), kind in 0u8..5) {
        let (mut history, mut end) = honest(ops, devices, &[1, 2, 3]);
        let op = format!("op{}", pick % ops);
        let expected = match kind {
            0 => {
                history.retain(|e| *e != Event::Effect { op: op.clone() });
                Problem::Lost { op }
            }
            1 => {
                history.push(Event::Effect { op: op.clone() });
                Problem::AppliedTwice { op, times: 2 }
            }
            2 => {
                history.push(Event::Effect { op: "ghost".into() });
                Problem::Unacknowledged { op: "ghost".into() }
            }
            3 => {
                let device = format!("d{}", pick % devices);
                let key = end.devices[&device].keys().next().cloned().unwrap_or(("shared".into(), "e0".into()));
                let server_value = end.server.get(&key).cloned();
                end.devices.get_mut(&device).map(|data| data.insert(key.clone(), "stale".into()));
                Problem::Diverged { device, entity: key, device_value: Some("stale".into()), server_value }
            }
            _ => {
                let device = format!("d{}", pick % devices);
                history.push(Event::Pulled { device: device.clone(), scope: "someone-else".into() });
                Problem::ForeignScope { device, scope: "someone-else".into() }
            }
        };
        let verdict = check(&history, &end);
        prop_assert_eq!(verdict.problems, vec![expected]);
    }
}

/// An edit whose device died inside the enqueue may have taken effect once
/// or not at all; twice is still a broken promise.
#[test]
fn an_attempted_operation_may_take_effect_at_most_once() {
    let attempted = Event::Attempted {
        device: "d1".into(),
        op: "op1".into(),
    };
    let none = check(std::slice::from_ref(&attempted), &FinalState::default());
    assert!(none.passed(), "{:?}", none.problems);
    assert_eq!(none.indeterminate, 1);
    let once = check(
        &[attempted.clone(), Event::Effect { op: "op1".into() }],
        &FinalState::default(),
    );
    assert!(once.passed(), "{:?}", once.problems);
    let twice = check(
        &[
            attempted,
            Event::Effect { op: "op1".into() },
            Event::Effect { op: "op1".into() },
        ],
        &FinalState::default(),
    );
    assert_eq!(
        twice.problems,
        [Problem::AppliedTwice {
            op: "op1".into(),
            times: 2
        }]
    );
}
