//! What the workspace's process-level tests share (not published): a
//! PostgreSQL server of the test's own ([`postgres::Cluster`]), used by
//! `sync-server`'s end-to-end test and the chaos harness.

#![deny(missing_docs)]

pub mod postgres;
