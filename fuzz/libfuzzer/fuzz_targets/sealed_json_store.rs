//! libFuzzer entry point of `sync_fuzz::sealed_json_store`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sync_fuzz::sealed_json_store(data));
