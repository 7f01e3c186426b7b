#![no_main]
//! `trousseau_proxy::fuzz` target "client_certificate" under libFuzzer (properties in its doc comment).

libfuzzer_sys::fuzz_target!(|data: &[u8]| (trousseau_proxy::fuzz::target("client_certificate").expect("a target").run)(data));
