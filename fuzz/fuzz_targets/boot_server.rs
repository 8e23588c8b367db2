//! Fuzz target: see `kiln::fuzzing::boot_server`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln::fuzzing::boot_server(data));
