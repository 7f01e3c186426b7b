#![no_main]
//! `trousseau_proxy::fuzz` target "cookie_header" under libFuzzer (properties in its doc comment).

libfuzzer_sys::fuzz_target!(|data: &[u8]| (trousseau_proxy::fuzz::target("cookie_header").expect("a target").run)(data));
