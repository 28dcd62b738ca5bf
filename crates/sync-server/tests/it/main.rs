//! Integration tests of `sync-server`: one binary, a module per behaviour.

mod batch;
mod feed;
mod feed_contract;
mod group;
mod key_memory;
mod key_model;
mod layer;
mod sqlite;
mod store_contract;
mod trace;
