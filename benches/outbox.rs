//! `sync-outbox` on the in-memory store: enqueue -> claim -> done cycles with
//! 10,000 and 1,000,000 other operations pending, to show that the cost of a
//! cycle does not grow with the queue. Run with `cargo xtask bench`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sync_outbox::{MemoryOutboxStore, Operation, Outbox, OutboxConfig, RetryPolicy};

/// Pending filler operations are due at this time, after every cycle's
/// `now`, so claims never pick them but they sit in every index.
const FILLER_DUE: i64 = 1 << 50;

fn cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox/cycle");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    for pending in [10_000usize, 1_000_000] {
        // A max_delay_ms beyond FILLER_DUE, so the clock-jump guard (which
        // pulls in ops scheduled further than max_delay_ms ahead) leaves the
        // fillers alone.
        let retry = RetryPolicy {
            max_delay_ms: FILLER_DUE * 2,
            ..RetryPolicy::default()
        };
        let outbox = Outbox::new(
            OutboxConfig {
                retry,
                ..OutboxConfig::default()
            },
            Arc::new(MemoryOutboxStore::new()),
        );
        for _ in 0..pending {
            outbox
                .enqueue(
                    Operation::new("message.send", "/api/messages", "{}"),
                    FILLER_DUE,
                )
                .expect("fill");
        }
        let op = Operation::new(
            "message.send",
            "/api/messages",
            r#"{"text":"hello offline-first"}"#,
        );
        let mut now = 1i64;
        let mut one_cycle = || {
            now += 1;
            let id = outbox.enqueue(op.clone(), now).expect("enqueue");
            let claimed = outbox.claim_ready(now, 1).expect("claim");
            assert_eq!(claimed.len(), 1);
            outbox.mark_done(black_box(&id), now).expect("done");
        };
        // Done operations stay in the store (nothing purges them here); grow
        // its maps past their early resizes so both sizes measure the steady
        // state, not the first doublings.
        for _ in 0..500_000 {
            one_cycle();
        }
        group.bench_function(BenchmarkId::new("memory", pending), |b| {
            b.iter(&mut one_cycle);
        });
    }
    group.finish();
}

criterion_group!(benches, cycle);
criterion_main!(benches);
