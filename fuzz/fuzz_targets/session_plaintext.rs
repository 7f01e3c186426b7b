#![no_main]
//! `trousseau_proxy::fuzz` target "session_plaintext" under libFuzzer (properties in its doc comment).

libfuzzer_sys::fuzz_target!(|data: &[u8]| (trousseau_proxy::fuzz::target("session_plaintext").expect("a target").run)(data));
