//! The integration tests: one binary, one module per story, all over real sockets against a real
//! proxy (in-process or the built binary) and the real parts a user would have — nginx, Caddy,
//! Traefik, Redis, headless Chromium, Helm and the Kubernetes validators. The only fake is the
//! identity provider: the embedded Trousseau twin.
//!
//! One binary rather than one per file: each binary links the whole proxy and its dependencies,
//! and linking was most of a cold `cargo test` (README, "Tests").
//!
//! A test whose real part is missing goes through [`support::parts`]: it fails when the run
//! requires every part (`cargo xtask test`, or `CI` set), and otherwise says it is skipped on the
//! terminal and in a summary printed after cargo's own.

mod support;

/// Counts each thread's heap ([`support::heap`]): the bound on what an in-process proxy holds.
#[global_allocator]
static HEAP: support::heap::Counting = support::heap::Counting;

mod advisories;
mod bearer;
mod browser;
mod cli;
mod dev_mode;
mod forward_auth;
mod grpc_authz;
mod fuzz_smoke;
mod hardening;
mod helm_chart;
mod http2_headers;
mod inject_annotations;
mod inject_webhook;
mod lifecycle;
mod limits;
mod packaging;
mod metrics;
mod open_connections;
mod policy;
mod proxying;
mod redis;
mod route_narrowing;
mod redis_ha;
mod reload;
mod robustness;
mod security;
mod session_hardening;
mod sign_in;
mod sign_in_loops;
mod telemetry;
mod tls;
mod spa;
