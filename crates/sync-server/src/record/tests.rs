//! The key state machine: every stored state against every request.

use proptest::prelude::*;

use super::{Decision, KeyRecord, KeyState, decide};
use crate::fingerprint::Fingerprint;
use crate::response::StoredResponse;

fn print(n: u8) -> Fingerprint {
    Fingerprint::of("POST", "/notes", &[n])
}

fn running(n: u8, lease_until_ms: i64) -> KeyRecord {
    KeyRecord {
        fingerprint: print(n),
        state: KeyState::Running {
            token: "t".into(),
            lease_until_ms,
        },
    }
}

fn completed(n: u8, expires_at_ms: i64) -> KeyRecord {
    remembered(n, expires_at_ms, expires_at_ms)
}

fn remembered(n: u8, expires_at_ms: i64, remembered_until_ms: i64) -> KeyRecord {
    KeyRecord {
        fingerprint: print(n),
        state: KeyState::Completed {
            response: StoredResponse::new(http::StatusCode::CREATED),
            expires_at_ms,
            remembered_until_ms,
        },
    }
}

#[test]
fn each_stored_state_gets_its_answer() {
    let now = 1_000;
    assert_eq!(decide(None, &print(1), now), Decision::Start);
    assert_eq!(
        decide(Some(&running(1, 1_500)), &print(1), now),
        Decision::InProgress {
            retry_after_ms: 500
        }
    );
    assert_eq!(
        decide(Some(&running(1, 1_000)), &print(1), now),
        Decision::TakeOver
    );
    assert_eq!(
        decide(Some(&running(2, 1_500)), &print(1), now),
        Decision::Mismatch
    );
    assert!(matches!(
        decide(Some(&completed(1, 2_000)), &print(1), now),
        Decision::Replay(r) if r.status == 201
    ));
    assert_eq!(
        decide(Some(&completed(2, 2_000)), &print(1), now),
        Decision::Mismatch
    );
    // Expired: forgotten, whatever the fingerprint.
    assert_eq!(
        decide(Some(&completed(1, 1_000)), &print(1), now),
        Decision::Start
    );
    assert_eq!(
        decide(Some(&completed(2, 999)), &print(1), now),
        Decision::Start
    );
    // The response expired, the key is still remembered: its status, never
    // a second run; another request with the key is still a mismatch.
    assert_eq!(
        decide(Some(&remembered(1, 1_000, 2_000)), &print(1), now),
        Decision::Remembered { status: 201 }
    );
    assert_eq!(
        decide(Some(&remembered(2, 1_000, 2_000)), &print(1), now),
        Decision::Mismatch
    );
    assert_eq!(
        decide(Some(&remembered(1, 500, 1_000)), &print(1), now),
        Decision::Start
    );
}

proptest! {
    /// Whatever is stored, a request's answer follows from the fingerprint
    /// and the deadlines alone, a replay is only ever of the same request's
    /// completed, unexpired response, and a remembered key is never run.
    #[test]
    fn decisions_follow_the_rules(
        same in any::<bool>(),
        completed_state in any::<bool>(),
        deadline in -10_000i64..10_000,
        memory in 0i64..10_000,
        now in -10_000i64..10_000,
    ) {
        let stored_print = if same { 1 } else { 2 };
        let record = if completed_state {
            remembered(stored_print, deadline, deadline + memory)
        } else {
            running(stored_print, deadline)
        };
        let decision = decide(Some(&record), &print(1), now);
        let forgotten = completed_state && deadline + memory <= now;
        let want = if forgotten {
            Decision::Start
        } else if !same {
            Decision::Mismatch
        } else if completed_state && deadline <= now {
            Decision::Remembered { status: 201 }
        } else if completed_state {
            Decision::Replay(StoredResponse::new(http::StatusCode::CREATED))
        } else if deadline <= now {
            Decision::TakeOver
        } else {
            Decision::InProgress { retry_after_ms: deadline - now }
        };
        prop_assert_eq!(decision, want);
    }
}
