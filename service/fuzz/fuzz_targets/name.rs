//! Fuzz target `name`: see `filewallball::fuzzing` for the properties it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| filewallball::fuzzing::replay("name", data));
