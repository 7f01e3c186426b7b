//! Fuzz targets: one function per decoder that takes bytes from the network or from Trousseau.
//!
//! Each target takes arbitrary bytes, feeds them to the real decoder, and asserts the properties the
//! decoder promises; a panic is a finding. Three runners call the same functions:
//!
//! * the cargo-fuzz crate in `fuzz/` (libFuzzer, nightly), one binary per target, with the seed
//!   corpus in `fuzz/corpus/<target>/` and dictionaries in `fuzz/dicts/<target>.dict`;
//! * `tests/fuzz_smoke.rs` in the normal test suite (stable, no libFuzzer): every seed, then a few
//!   seconds of inputs from [`mutate::Mutator`], so a decoder regression fails CI;
//! * `fuzz/run-all.sh`, the long runs with a table of the figures.
//!
//! Nothing here touches the network, the clock beyond reading it, or files (the config target
//! blanks the keys that name files). Fixed test keys ([`fixtures`]) make sealed values and signed
//! tokens in the committed corpus meaningful; values that expire are written as markers (`@S@`,
//! `@LT@`, …) that [`fixtures::expand`] replaces with fresh ones. See `fuzz/README.md`.

pub mod certificates;
pub mod config;
pub mod cookies;
pub mod fixtures;
pub mod mutate;
pub mod organizations;
pub mod request;
pub mod seeds;
pub mod tokens;

/// A fuzz target: its name (the directory of its corpus, the name of its cargo-fuzz binary) and the
/// function that checks one input.
#[derive(Clone, Copy)]
pub struct Target {
    /// `fuzz/corpus/<name>/`, `fuzz/fuzz_targets/<name>.rs`, `fuzz/dicts/<name>.dict`.
    pub name: &'static str,
    /// Runs one input through the decoder; panics on a finding.
    pub run: fn(&[u8]),
}

/// Every target. A new one is added here, in `fuzz/Cargo.toml`, `fuzz/fuzz_targets/`, and with a
/// seed corpus; `tests/fuzz_smoke.rs` then needs one line (see `fuzz/README.md`).
pub const TARGETS: &[Target] = &[
    Target { name: "cookie_header", run: cookies::cookie_header },
    Target { name: "session_cookie", run: cookies::session_cookie },
    Target { name: "session_plaintext", run: cookies::session_plaintext },
    Target { name: "state_cookie", run: cookies::state_cookie },
    Target { name: "logout_token", run: tokens::logout_token },
    Target { name: "logout_token_claims", run: tokens::logout_token_claims },
    Target { name: "id_token", run: tokens::id_token },
    Target { name: "id_token_claims", run: tokens::id_token_claims },
    Target { name: "organizations_claim", run: organizations::organizations_claim },
    Target { name: "config", run: config::config },
    Target { name: "forward_auth_headers", run: request::forward_auth_headers },
    Target { name: "path_rules", run: request::path_rules },
    Target { name: "trace_context", run: request::trace_context },
    Target { name: "client_certificate", run: certificates::client_certificate },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}
