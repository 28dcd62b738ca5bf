//! The chaos harness's parts (issue 28, `docs/RELIABILITY.md`).
//!
//! So far: [`check`], the checker that judges a run's recorded history
//! ([`Event`]s) and its end ([`FinalState`]) against the promises; [`Lab`],
//! hosts as network namespaces on a private bridge; and
//! [`FaultProxy`], a fault-injecting TCP proxy in the manner of
//! Toxiproxy. This machine's kernel has no `netem`, so the harness puts one
//! of these on every link between a device and a server (and between a
//! server and its database) and injects the faults in user space: latency
//! and jitter, connections reset in the middle of a request or of an
//! answer, answers held back past the client's timeout, a bandwidth limit,
//! and partitions (a blackholed link accepts and then says nothing).
//! Every decision comes from a seeded generator, so a fault schedule
//! replays from its seed, and every injected fault is counted by kind for
//! the harness's figures.

#![deny(missing_docs)]

pub mod device;
mod history;
mod lab;
mod proxy;
pub mod run;
pub mod server;

pub use history::{EntityKey, Event, FinalState, Problem, Verdict, check, parse_history};
pub use lab::{Host, Lab, LabError};
pub use proxy::{FaultCounts, FaultProxy, Faults};
