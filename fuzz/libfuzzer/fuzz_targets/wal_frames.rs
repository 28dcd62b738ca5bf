//! libFuzzer entry point of `sync_fuzz::wal_frames`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sync_fuzz::wal_frames(data));
