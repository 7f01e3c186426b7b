#![no_main]
//! `trousseau_proxy::fuzz` target "trace_context" under libFuzzer (properties in its doc comment).

libfuzzer_sys::fuzz_target!(|data: &[u8]| (trousseau_proxy::fuzz::target("trace_context").expect("a target").run)(data));
