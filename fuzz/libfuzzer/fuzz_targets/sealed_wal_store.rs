//! libFuzzer entry point of `sync_fuzz::sealed_wal_store`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sync_fuzz::sealed_wal_store(data));
