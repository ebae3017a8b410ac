//! Fuzz target `scenario`: see `fwb_loadtest::scenario::fuzz` for the properties it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fwb_loadtest::scenario::fuzz(data));
