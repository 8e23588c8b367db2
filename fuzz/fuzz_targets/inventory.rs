//! Fuzz target: see `kiln::fuzzing::inventory`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln::fuzzing::inventory(data));
