//! Integration tests of `sync-outbox`: one binary, one module per behaviour.

mod conformance;
mod state_machine;
