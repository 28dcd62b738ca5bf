//! The protocol's integration tests: one binary, a module per behaviour.

mod batch_format;
mod group_format;
mod pull_format;
mod status_table;
