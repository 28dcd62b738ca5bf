//! Integration tests of `sync-outbox`: one binary, one module per behaviour.

mod conformance;
mod dead_letters;
mod state_machine;
