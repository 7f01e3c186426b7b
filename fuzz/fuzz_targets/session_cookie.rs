#![no_main]
//! `trousseau_proxy::fuzz` target "session_cookie" under libFuzzer (properties in its doc comment).

libfuzzer_sys::fuzz_target!(|data: &[u8]| (trousseau_proxy::fuzz::target("session_cookie").expect("a target").run)(data));
