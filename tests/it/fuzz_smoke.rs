//! A short bounded fuzzing run of every decoder of network and IdP input, in the normal test suite:
//! each fuzz target of `trousseau_proxy::fuzz` runs over its committed seed corpus
//! (`fuzz/corpus/<target>/`, regression inputs included), then over a few seconds of deterministic
//! mutations of it. The long coverage-guided runs are libFuzzer's (`fuzz/README.md`).
//!
//! `TROUSSEAU_FUZZ_SMOKE_SECS` sets the mutation budget per target (default 2 seconds, at most
//! 20,000 inputs).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use trousseau_proxy::fuzz::{self, mutate};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn smoke(name: &str) {
    let target = fuzz::target(name).unwrap_or_else(|| panic!("no fuzz target {name}"));
    let budget = std::env::var("TROUSSEAU_FUZZ_SMOKE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(Duration::from_secs(2), Duration::from_secs_f64);
    let dir = fuzz_dir();
    let run = mutate::smoke(
        target,
        &dir.join("corpus").join(name),
        &dir.join("dicts").join(format!("{name}.dict")),
        budget,
        20_000,
    );
    eprintln!("fuzz target {name}: {} seeds, {} mutations", run.seeds, run.mutations);
    assert!(run.seeds > 0);
}

#[test]
fn cookie_header_parser_survives_its_corpus_and_mutations() {
    smoke("cookie_header");
}

#[test]
fn sealed_session_cookie_and_its_chunks_survive_their_corpus_and_mutations() {
    smoke("session_cookie");
}

#[test]
fn session_behind_the_seal_survives_its_corpus_and_mutations() {
    smoke("session_plaintext");
}

#[test]
fn state_cookie_and_return_path_survive_their_corpus_and_mutations() {
    smoke("state_cookie");
}

#[test]
fn client_certificate_subjects_survive_their_corpus_and_mutations() {
    smoke("client_certificate");
}

#[test]
fn logout_token_parsing_survives_its_corpus_and_mutations() {
    smoke("logout_token");
}

#[test]
fn signed_logout_tokens_are_accepted_only_as_the_spec_says() {
    smoke("logout_token_claims");
}

#[test]
fn id_token_parsing_survives_its_corpus_and_mutations() {
    smoke("id_token");
}

#[test]
fn signed_id_tokens_are_accepted_only_as_the_spec_says() {
    smoke("id_token_claims");
}

#[test]
fn organizations_claim_survives_its_corpus_and_mutations() {
    smoke("organizations_claim");
}

#[test]
fn config_loading_survives_its_corpus_and_mutations() {
    smoke("config");
}

#[test]
fn forward_auth_descriptions_are_exactly_what_the_gateway_said_or_ambiguous() {
    smoke("forward_auth_headers");
}

#[test]
fn route_decisions_are_at_least_as_strict_as_any_app_servers_reading_of_the_path() {
    smoke("path_rules");
}

#[test]
fn a_trace_is_continued_exactly_when_the_callers_traceparent_is_valid() {
    smoke("trace_context");
}

/// Every target has a seed corpus, a cargo-fuzz binary and a dictionary, and every cargo-fuzz
/// binary is a target: a target added in one place only is caught here.
#[test]
fn every_fuzz_target_has_a_corpus_a_binary_and_a_dictionary() {
    let dir = fuzz_dir();
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for target in fuzz::TARGETS {
        let name = target.name;
        let corpus = dir.join("corpus").join(name);
        assert!(std::fs::read_dir(&corpus).is_ok_and(|mut d| d.next().is_some()), "{name}: no seeds in {}", corpus.display());
        let source = dir.join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&source).unwrap_or_else(|_| panic!("{name}: no {}", source.display()));
        assert!(text.contains(&format!("\"{name}\"")), "{name}: its binary runs another target");
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{name}: not a [[bin]] of fuzz/Cargo.toml");
        assert!(dir.join("dicts").join(format!("{name}.dict")).is_file(), "{name}: no dictionary");
    }
    let binaries = manifest.matches("[[bin]]").count();
    assert_eq!(binaries, fuzz::TARGETS.len(), "fuzz/Cargo.toml has binaries that are not targets");
}

/// The peers' JWS parsers blew up on many dots (go-jose GHSA-c6gw-w398-hv78): a megabyte of dots,
/// or a megabyte-long header, is refused quickly by every decoder that may see it.
#[test]
fn a_megabyte_of_dots_or_a_huge_header_is_refused_in_bounded_time() {
    let dots = ".".repeat(1 << 20);
    let huge_header = format!(
        "{}.e30.AAAA",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, format!(r#"{{"alg":"ES256","x":"{}"}}"#, "A".repeat(1 << 20)))
    );
    let semicolons = "a=;".repeat(1 << 18);
    let cases: [(&str, Vec<u8>); 8] = [
        ("logout_token", format!("logout_token={dots}").into_bytes()),
        ("logout_token", dots.clone().into_bytes()),
        ("logout_token", format!("logout_token={huge_header}").into_bytes()),
        ("id_token", dots.clone().into_bytes()),
        ("id_token", huge_header.into_bytes()),
        ("cookie_header", semicolons.clone().into_bytes()),
        ("session_cookie", format!("__Host-trousseau_session=1.{}", "A".repeat(1 << 20)).into_bytes()),
        ("config", "- x\n".repeat(1 << 18).into_bytes()),
    ];
    for (name, input) in cases {
        let target = fuzz::target(name).expect("target");
        let started = Instant::now();
        (target.run)(&input);
        let took = started.elapsed();
        eprintln!("{name}: {} bytes in {took:?}", input.len());
        assert!(took < Duration::from_secs(5), "{name}: {} bytes took {took:?}", input.len());
    }
}

/// Writes the seed corpus of `trousseau_proxy::fuzz::seeds` into `fuzz/corpus/` (existing files
/// are kept). Run by hand: `cargo test --test it -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand when seeds change"]
fn write_seed_corpus() {
    let dir = fuzz_dir().join("corpus");
    let mut written = 0;
    for (target, name, bytes) in fuzz::seeds::seeds() {
        let path = dir.join(target).join(&name);
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("corpus directory");
        if !path.exists() {
            std::fs::write(&path, bytes).expect("seed written");
            written += 1;
        }
    }
    eprintln!("{written} seeds written under {}", dir.display());
}
