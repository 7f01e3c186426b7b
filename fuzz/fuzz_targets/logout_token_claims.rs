#![no_main]
//! `trousseau_proxy::fuzz` target "logout_token_claims" under libFuzzer (properties in its doc comment).

libfuzzer_sys::fuzz_target!(|data: &[u8]| (trousseau_proxy::fuzz::target("logout_token_claims").expect("a target").run)(data));
