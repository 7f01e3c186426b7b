//! The validated configuration: [`Settings`] and its sections, ready to use (parsed URLs, loaded
//! secrets, compiled header mappings).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::{OrganizationConfig, ProxyConfig, RoutesConfig};

/// The whole configuration, validated and ready to use.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Public URL without trailing slash.
    pub public_url: Url,
    /// `public_url` as a string without trailing slash (assertion `iss`).
    pub public_origin: String,
    /// Whether browsers reach us over https (cookies then get `Secure` and `__Host-`).
    pub secure_cookies: bool,
    /// The upstream app.
    pub upstream: Url,
    /// Admin listener for `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// HTTPS on `listen`, when configured.
    pub tls: Option<TlsSettings>,
    /// Plain listener redirecting to https (only with `tls`).
    pub http_redirect_listen: Option<SocketAddr>,
    /// Listener of the gRPC external authorization server.
    pub grpc_authz_listen: Option<SocketAddr>,
    /// Forwarding settings.
    pub proxy: ProxyConfig,
    /// The OIDC client.
    pub oidc: OidcSettings,
    /// The session.
    pub session: SessionSettings,
    /// The identity headers.
    pub identity: IdentitySettings,
    /// Organization requirements.
    pub organization: OrganizationConfig,
    /// Routes.
    pub routes: RoutesConfig,
    /// Accept `Authorization: Bearer` access tokens (resolved via userinfo).
    pub bearer_userinfo: bool,
    /// Connection and request limits.
    pub limits: crate::limits::LimitSettings,
    /// How many bearer token checks Trousseau gets from this replica.
    pub bearer_limits: BearerLimits,
    /// Cross-origin front ends.
    pub cors: CorsSettings,
    /// Traces (`telemetry:`).
    pub telemetry: super::TelemetryConfig,
}

/// Validated `tls:`: the files exist and load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
    /// CAs of the client certificates required (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    /// HSTS `max-age`; zero: no HSTS.
    pub hsts_max_age: Duration,
}

/// Validated `cors:`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorsSettings {
    /// Origins as browsers send them in `Origin` (scheme, lower-case host, port unless default).
    pub allowed_origins: Vec<String>,
    /// Genuine preflights go to the app without a session, unless a rule says otherwise.
    pub preflight_pass: bool,
}

/// Validated `api.introspections_*`: the cap on bearer token checks sent to Trousseau.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BearerLimits {
    /// Checks per second (the bucket refills at this rate and holds as many).
    pub per_second: u32,
    /// Checks in progress at once.
    pub in_flight: u32,
}

pub use crate::oidc::OidcSettings;

/// Validated `session:`.
#[derive(Clone)]
pub struct SessionSettings {
    /// Decoded secrets (≥ 32 bytes each); the first encrypts.
    pub secrets: Vec<Vec<u8>>,
    /// Cookie base name (without the `__Host-` prefix).
    pub cookie_name: String,
    /// Absolute lifetime.
    pub max_lifetime: Duration,
    /// Where sessions live.
    pub store: StoreKind,
    /// Where Redis is (credentials included) when Redis is used: `store: redis`, `revocations:
    /// redis`, and refresh coordination across replicas.
    pub redis: Option<crate::session::redis::RedisTarget>,
    /// CA trusted for a Redis reached over TLS (instead of the system's).
    pub redis_ca_file: Option<PathBuf>,
    /// Where back-channel revocations live.
    pub revocations: RevocationKind,
    /// How old a cached revocation answer may be (`revocations: redis`).
    pub revocation_staleness: Duration,
    /// Refresh skew.
    pub refresh_skew: Duration,
    /// Grace when the IdP is unreachable.
    pub refresh_grace: Duration,
    /// Most sessions per user in a server-side store (the oldest end first).
    pub max_sessions_per_user: u32,
    /// Most bytes the memory store holds (least recently used sessions end first).
    pub memory_store_max_bytes: u64,
    /// Websockets and long responses end with their session.
    pub end_open_connections: bool,
}

impl fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSettings")
            .field("secrets", &format_args!("<{} redacted>", self.secrets.len()))
            .field("cookie_name", &self.cookie_name)
            .field("max_lifetime", &self.max_lifetime)
            .field("store", &self.store)
            .field("redis", &self.redis)
            .field("revocations", &self.revocations)
            .finish_non_exhaustive()
    }
}

/// Where session data lives (`session.store`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The whole session sealed in the cookie.
    Cookie,
    /// In this process's memory; the cookie carries a sealed handle.
    Memory,
    /// In Redis; the cookie carries a sealed handle.
    Redis,
}

/// Where back-channel revocations live (`session.revocations`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    /// In this replica's memory.
    Memory,
    /// In Redis, seen by every replica.
    Redis,
}

/// Validated `identity:`.
#[derive(Clone, Debug)]
pub struct IdentitySettings {
    /// PEM texts of the signing keys; empty = generate an ephemeral one.
    pub signing_keys_pem: Vec<String>,
    /// Assertion audience.
    pub audience: String,
    /// Assertion lifetime.
    pub assertion_ttl: Duration,
    /// Forward the access token.
    pub pass_access_token: bool,
    /// Extra identity headers (preset and custom), compiled.
    pub extra_headers: crate::identity::ExtraHeaders,
}
