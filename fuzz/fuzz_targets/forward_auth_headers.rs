#![no_main]
//! `trousseau_proxy::fuzz` target "forward_auth_headers" under libFuzzer (properties in its doc comment).

libfuzzer_sys::fuzz_target!(|data: &[u8]| (trousseau_proxy::fuzz::target("forward_auth_headers").expect("a target").run)(data));
