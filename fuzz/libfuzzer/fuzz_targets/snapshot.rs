//! libFuzzer entry point of `sync_fuzz::snapshot`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sync_fuzz::snapshot(data));
