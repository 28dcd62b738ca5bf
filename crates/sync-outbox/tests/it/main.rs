//! Integration tests of `sync-outbox`: one binary, one module per behaviour.

mod bad_operations;
mod conformance;
mod dead_letters;
mod dependencies;
mod live_view;
mod state_machine;
mod trace_context;
