//! libFuzzer entry point of `sync_fuzz::json_store`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sync_fuzz::json_store(data));
