//! Fuzz target: see `kiln::fuzzing::redfish_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln::fuzzing::redfish_response(data));
