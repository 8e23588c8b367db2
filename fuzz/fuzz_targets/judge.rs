//! Fuzz target: see `kiln::fuzzing::judge`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln::fuzzing::judge(data));
