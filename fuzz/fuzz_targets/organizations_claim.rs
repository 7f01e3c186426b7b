#![no_main]
//! `trousseau_proxy::fuzz` target "organizations_claim" under libFuzzer (properties in its doc comment).

libfuzzer_sys::fuzz_target!(|data: &[u8]| (trousseau_proxy::fuzz::target("organizations_claim").expect("a target").run)(data));
