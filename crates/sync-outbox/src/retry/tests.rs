//! Unit tests of the backoff formula and of jitter's bounds and determinism.

use super::*;

fn guide() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(500),
        factor: 2.0,
        ..RetryPolicy::default()
    }
}

#[test]
fn backoff_follows_the_formula_and_caps() {
    let policy = RetryPolicy {
        max_delay: Duration::from_secs(3),
        ..guide()
    };
    let delays: Vec<i64> = (1..=6).map(|n| policy.backoff_ms(n)).collect();
    assert_eq!(delays, [500, 1000, 2000, 3000, 3000, 3000]);
    assert_eq!(
        policy.backoff_ms(0),
        500,
        "attempt 0 is treated as the first"
    );
    assert_eq!(policy.backoff_ms(u32::MAX), 3_000);
}

#[test]
#[expect(deprecated, reason = "the old ms fields are honoured for one release")]
fn the_old_millisecond_fields_are_honoured_while_the_new_ones_are_at_their_defaults() {
    let old = RetryPolicy {
        base_delay_ms: 250,
        max_delay_ms: 600,
        ..RetryPolicy::default()
    };
    assert_eq!((old.base_delay_in_ms(), old.max_delay_in_ms()), (250, 600));
    assert_eq!(old.backoff_ms(3), 600);
    let both = RetryPolicy {
        base_delay: Duration::from_millis(100),
        ..old
    };
    assert_eq!(both.base_delay_in_ms(), 100, "the new field wins once set");
}

#[test]
#[expect(
    deprecated,
    reason = "negative delays can only be said with the old fields"
)]
fn odd_policies_never_give_negative_or_nan_delays() {
    for (base, factor) in [
        (-5, 2.0),
        (500, f64::NAN),
        (500, -1.0),
        (500, 0.0),
        (i64::MAX, f64::INFINITY),
    ] {
        let policy = RetryPolicy {
            base_delay_ms: base,
            factor,
            ..guide()
        };
        for n in 1..5 {
            let d = policy.backoff_ms(n);
            assert!(
                (0..=policy.max_delay_in_ms()).contains(&d),
                "base {base} factor {factor} n {n}: {d}"
            );
        }
    }
}

#[test]
fn gives_up_after_max_attempts() {
    let policy = guide();
    assert!(!policy.gives_up_after(1));
    assert!(!policy.gives_up_after(2));
    assert!(policy.gives_up_after(3));
}

#[test]
fn jitter_is_bounded_and_reproducible() {
    for jitter in [Jitter::Full { seed: 7 }, Jitter::Equal { seed: 7 }] {
        let policy = RetryPolicy { jitter, ..guide() };
        let mut distinct = std::collections::BTreeSet::new();
        for i in 0..200 {
            let id = format!("op_{i}");
            let d = policy.delay_ms(&id, 2);
            let low = if matches!(jitter, Jitter::Equal { .. }) {
                500
            } else {
                0
            };
            assert!((low..=1000).contains(&d), "{jitter:?}: {d}");
            assert_eq!(d, policy.delay_ms(&id, 2), "same inputs, same delay");
            distinct.insert(d);
        }
        assert!(
            distinct.len() > 50,
            "{jitter:?} spreads delays: {} distinct",
            distinct.len()
        );
    }
    assert_eq!(guide().delay_ms("x", 2), 1000);
}
