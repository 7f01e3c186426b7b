#![no_main]
//! `trousseau_proxy::fuzz` target "config" under libFuzzer (properties in its doc comment).

libfuzzer_sys::fuzz_target!(|data: &[u8]| (trousseau_proxy::fuzz::target("config").expect("a target").run)(data));
