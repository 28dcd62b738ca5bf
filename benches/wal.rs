//! `sync-wal` throughput against the physical baseline in the same group:
//! what the disk and the OS give for the same bytes without the log.
//!
//! Groups: `wal/append` (`Never`, one record per call), `wal/append_batch`
//! (1,000 x 64 B per call), `wal/replay` (1,000,000 x 64 B), `wal/always`
//! (group commit with 1, 4, 16 threads). Run with `cargo xtask bench`.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sync_wal::format::encode_frame;
use sync_wal::{RecordType, SyncPolicy, Wal, WalConfig, WalRecord};

fn record(payload: usize) -> WalRecord {
    WalRecord {
        id: "op_0000000001".into(),
        kind: RecordType::PutOperation,
        ts_ms: 1_700_000_000_000,
        payload: vec![7; payload],
    }
}

fn encoded(record: &WalRecord) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_frame(record, u32::MAX, &mut bytes).expect("bench record fits");
    bytes
}

fn open_wal(dir: &Path, sync: SyncPolicy) -> Wal {
    let mut config = WalConfig::new(dir);
    config.sync = sync;
    Wal::open(config).expect("open wal")
}

fn raw_file(dir: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw"))
        .expect("open raw file")
}

/// Runs `body(iters)` on a fresh directory per sample, so files stay small
/// and setup stays out of the timing.
fn fresh_dir_timing(iters: u64, body: impl FnOnce(&Path, u64) -> Duration) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    body(dir.path(), iters)
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal/append");
    group.measurement_time(Duration::from_secs(3));
    for size in [64usize, 1024] {
        let rec = record(size);
        let bytes = encoded(&rec);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("sync-wal", size), &rec, |b, rec| {
            b.iter_custom(|iters| {
                fresh_dir_timing(iters, |dir, iters| {
                    let wal = open_wal(dir, SyncPolicy::Never);
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(wal.append(rec).expect("append"));
                    }
                    start.elapsed()
                })
            });
        });
        group.bench_with_input(
            BenchmarkId::new("baseline-write", size),
            &bytes,
            |b, bytes| {
                b.iter_custom(|iters| {
                    fresh_dir_timing(iters, |dir, iters| {
                        let mut file = raw_file(dir);
                        let start = Instant::now();
                        for _ in 0..iters {
                            file.write_all(bytes).expect("write");
                        }
                        start.elapsed()
                    })
                });
            },
        );
    }
    group.finish();
}

fn append_batch(c: &mut Criterion) {
    const N: usize = 1000;
    let mut group = c.benchmark_group("wal/append_batch");
    group.measurement_time(Duration::from_secs(3));
    let batch: Vec<WalRecord> = (0..N).map(|_| record(64)).collect();
    let bytes: Vec<u8> = batch.iter().flat_map(encoded).collect();
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function(BenchmarkId::new("sync-wal", N), |b| {
        b.iter_custom(|iters| {
            fresh_dir_timing(iters, |dir, iters| {
                let wal = open_wal(dir, SyncPolicy::Never);
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(wal.append_batch(&batch).expect("append_batch"));
                }
                start.elapsed()
            })
        });
    });
    group.bench_function(BenchmarkId::new("baseline-bufwriter", N), |b| {
        b.iter_custom(|iters| {
            fresh_dir_timing(iters, |dir, iters| {
                let mut file = BufWriter::new(raw_file(dir));
                let start = Instant::now();
                for _ in 0..iters {
                    file.write_all(&bytes).expect("write");
                    file.flush().expect("flush");
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn replay(c: &mut Criterion) {
    const N: usize = 1_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = open_wal(dir.path(), SyncPolicy::Never);
    let batch: Vec<WalRecord> = (0..1000).map(|_| record(64)).collect();
    for _ in 0..N / 1000 {
        wal.append_batch(&batch).expect("fill");
    }
    let segments: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    let total: u64 = segments
        .iter()
        .map(|p| std::fs::metadata(p).expect("stat").len())
        .sum();

    let mut group = c.benchmark_group("wal/replay");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(total));
    group.bench_function(BenchmarkId::new("sync-wal", N), |b| {
        b.iter(|| {
            let mut n = 0usize;
            wal.replay(0, |r| n += black_box(r.payload.len()))
                .expect("replay");
            assert_eq!(n, N * 64);
        });
    });
    group.bench_function(BenchmarkId::new("baseline-read-crc", N), |b| {
        b.iter(|| {
            for path in &segments {
                let bytes = std::fs::read(path).expect("read");
                black_box(crc32fast::hash(&bytes));
            }
        });
    });
    group.finish();
}

fn always(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal/always");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    let rec = record(64);
    for threads in [1usize, 4, 16] {
        // One iteration: every thread appends one record.
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_with_input(
            BenchmarkId::new("sync-wal", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    fresh_dir_timing(iters, |dir, iters| {
                        let wal = Arc::new(open_wal(dir, SyncPolicy::Always));
                        let barrier = Arc::new(Barrier::new(threads + 1));
                        let handles: Vec<_> = (0..threads)
                            .map(|_| {
                                let (wal, barrier, rec) =
                                    (Arc::clone(&wal), Arc::clone(&barrier), rec.clone());
                                std::thread::spawn(move || {
                                    barrier.wait();
                                    for _ in 0..iters {
                                        wal.append(&rec).expect("append");
                                    }
                                })
                            })
                            .collect();
                        barrier.wait();
                        let start = Instant::now();
                        for handle in handles {
                            handle.join().expect("appender");
                        }
                        start.elapsed()
                    })
                });
            },
        );
    }
    let bytes = encoded(&rec);
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("baseline-write-sync", 1), |b| {
        b.iter_custom(|iters| {
            fresh_dir_timing(iters, |dir, iters| {
                let mut file = raw_file(dir);
                let start = Instant::now();
                for _ in 0..iters {
                    file.write_all(&bytes).expect("write");
                    file.sync_data().expect("sync");
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

criterion_group!(benches, append, append_batch, replay, always);
criterion_main!(benches);
