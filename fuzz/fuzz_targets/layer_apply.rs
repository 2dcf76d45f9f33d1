//! Fuzz target: see `kiln::fuzzcheck::layer_apply` for the property checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln::fuzzcheck::layer_apply(data));
