#![no_main]
//! `trousseau_proxy::fuzz` target "path_rules" under libFuzzer (properties in its doc comment).

libfuzzer_sys::fuzz_target!(|data: &[u8]| (trousseau_proxy::fuzz::target("path_rules").expect("a target").run)(data));
