//! Integration tests of `sync-outbox`.
