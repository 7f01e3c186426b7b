//! The keys of the configuration: every path, which hold secrets, lists or numbers, and their
//! environment variable names.

use super::ENV_PREFIX;

/// Where a secret that must be redacted in `check-config` lives.
pub(super) const SECRET_KEYS: &[&str] = &["oidc.client_secret", "session.secrets", "session.redis_url"];

/// Every settable key path, for mapping environment variables onto the tree (`_` is ambiguous
/// between levels and inside names, so we match against the known paths).
pub(super) const KEY_PATHS: &[&str] = &[
    "listen",
    "public_url",
    "upstream",
    "metrics_listen",
    "http_redirect_listen",
    "tls.cert_file",
    "tls.key_file",
    "tls.client_ca_file",
    "tls.hsts_max_age",
    "proxy.preserve_host",
    "proxy.ca_file",
    "proxy.connect_timeout",
    "proxy.response_timeout",
    "proxy.trust_forwarded_headers",
    "proxy.drain_timeout",
    "oidc.issuer",
    "oidc.client_id",
    "oidc.client_secret",
    "oidc.client_secret_file",
    "oidc.scopes",
    "oidc.post_logout_redirect_uri",
    "oidc.ca_file",
    "oidc.timeout",
    "oidc.jwks_refetch_interval",
    "session.secrets",
    "session.secrets_file",
    "session.cookie_name",
    "session.max_lifetime",
    "session.store",
    "session.redis_url",
    "session.redis_url_file",
    "session.redis_ca_file",
    "session.revocations",
    "session.revocation_staleness",
    "session.refresh_skew",
    "session.refresh_grace",
    "session.max_sessions_per_user",
    "session.memory_store_max_mib",
    "session.end_open_connections",
    "identity.signing_key_file",
    "identity.audience",
    "identity.assertion_ttl",
    "identity.pass_access_token",
    "identity.headers_preset",
    "identity.headers",
    "organization.required",
    "organization.allowed",
    "organization.roles",
    "routes.public",
    "routes.rules",
    "api.bearer",
    "api.introspections_per_second",
    "api.introspections_in_flight",
    "cors.allowed_origins",
    "cors.preflight",
    "limits.max_connections",
    "limits.metrics_max_connections",
    "limits.max_requests_in_flight",
    "limits.max_requests_per_client",
    "limits.http2_max_concurrent_streams",
    "limits.header_timeout",
    "limits.idle_timeout",
    "limits.request_body_timeout",
    "limits.request_body_min_rate",
    "limits.send_timeout",
];

/// Keys whose value is a list: from the environment they take YAML flow syntax (`[a, b]`) or a
/// comma-separated list.
pub(super) const LIST_KEYS: &[&str] = &[
    "oidc.scopes",
    "session.secrets",
    "organization.allowed",
    "organization.roles",
    "routes.public",
    "identity.signing_key_file",
    "cors.allowed_origins",
];

/// Keys whose value is a number: from the environment, `20` is that number, not the text "20".
pub(super) const NUMBER_KEYS: &[&str] = &[
    "session.max_sessions_per_user",
    "session.memory_store_max_mib",
    "api.introspections_per_second",
    "api.introspections_in_flight",
    "limits.max_connections",
    "limits.metrics_max_connections",
    "limits.max_requests_in_flight",
    "limits.max_requests_per_client",
    "limits.http2_max_concurrent_streams",
    "limits.request_body_min_rate",
];

/// Environment variables with our prefix that are not configuration keys.
pub(super) const NON_KEY_VARS: &[&str] = &["TROUSSEAU_PROXY_CONFIG", "TROUSSEAU_PROXY_LOG"];

/// The environment variable name of a key path.
pub fn env_name(path: &str) -> String {
    format!("{ENV_PREFIX}{}", path.replace('.', "_").to_ascii_uppercase())
}

/// Every key path, and the ones holding secrets: for the fuzz targets ([`crate::fuzz`]), which
/// check that errors name a real key and that `check-config` never shows a secret.
#[doc(hidden)]
pub fn key_paths() -> (&'static [&'static str], &'static [&'static str]) {
    (KEY_PATHS, SECRET_KEYS)
}
