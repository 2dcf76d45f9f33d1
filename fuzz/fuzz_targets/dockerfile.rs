//! Fuzz target: see `kiln::fuzzcheck::dockerfile` for the property checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln::fuzzcheck::dockerfile(data));
