//! The configuration file as written: the YAML schema (`FileConfig` and its sections), with
//! every default. Validation turns it into [`super::Settings`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{HumanDuration, OneOrMany, RevocationKind, StoreKind};
use crate::identity::HeadersPreset;
use super::keys::SECRET_KEYS;

/// The configuration file as written (before validation). Field docs are the reference; README
/// repeats them for users.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Address the proxy listens on. Default `127.0.0.1:4180`.
    pub listen: Option<String>,
    /// How browsers reach the proxy; the redirect URI is `public_url + "/.trousseau/callback"`.
    pub public_url: Option<String>,
    /// The app behind the proxy, `http://` or `https://`.
    pub upstream: Option<String>,
    /// Optional admin listener serving `/metrics`.
    pub metrics_listen: Option<String>,
    /// Optional plain-http listener beside an https `listen`: answers every request with a 308 to
    /// the same host and path over https, except `/.trousseau/healthz` (for load balancers).
    pub http_redirect_listen: Option<String>,
    /// Optional listener for Envoy's external authorization over gRPC
    /// (`envoy.service.auth.v3.Authorization/Check`, plaintext HTTP/2): the Gateway API
    /// `ExternalAuth` filter's gRPC form.
    pub grpc_authz_listen: Option<String>,
    /// HTTPS on `listen`.
    pub tls: TlsConfig,
    /// How requests are forwarded.
    pub proxy: ProxyConfig,
    /// The Trousseau client.
    pub oidc: OidcConfig,
    /// The session cookie.
    pub session: SessionConfig,
    /// What the app receives about the user.
    pub identity: IdentityConfig,
    /// Organization requirements (Trousseau tier 3).
    pub organization: OrganizationConfig,
    /// Public routes and per-route rules.
    pub routes: RoutesConfig,
    /// API clients.
    pub api: ApiConfig,
    /// Cross-origin front ends of this app.
    pub cors: CorsConfig,
    /// Connection and request resource limits.
    pub limits: LimitsConfig,
    /// Traces: W3C trace context is always propagated.
    pub telemetry: TelemetryConfig,
}

/// `telemetry:` — traces. Every request continues the caller's W3C trace or starts one, and
/// passes it on to the app and to Trousseau; with `otlp_endpoint`, the sampled ones' spans are
/// exported.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Probability (0 to 1) that a trace the proxy starts is sampled (`traceparent` flag `01`);
    /// a continued trace keeps its caller's decision. Default 1.
    pub sampling_ratio: f64,
    /// An OpenTelemetry collector's OTLP/HTTP endpoint (`http://collector:4318`: spans go to its
    /// `/v1/traces`; a URL with another path is used as it is). Unset: nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// Whether a request's span carries the user's `sub` (`enduser.id`). Default true.
    pub include_sub: bool,
    /// Whether a caller's valid `traceparent` is continued (W3C's rule; default true). False at
    /// an edge facing clients you do not trust: every request starts a trace of its own, so no
    /// client can put its requests (their spans, access and audit lines) in another trace.
    pub trust_incoming: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { sampling_ratio: 1.0, otlp_endpoint: None, include_sub: true, trust_incoming: true }
    }
}

/// `tls:` — the proxy as the front door: HTTPS on `listen` (HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2
/// and 1.3), the certificate re-read when its files change.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. With `key_file`: `listen` serves HTTPS.
    pub cert_file: Option<String>,
    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<String>,
    /// PEM CA certificates: clients must present a certificate they issued (mutual TLS); its
    /// subject reaches the app as `X-Trousseau-Client-Subject`.
    pub client_ca_file: Option<String>,
    /// `Strict-Transport-Security: max-age` on every answer over HTTPS. Default 365 days; `0s`
    /// turns HSTS off.
    pub hsts_max_age: HumanDuration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig { cert_file: None, key_file: None, client_ca_file: None, hsts_max_age: HumanDuration(Duration::from_secs(365 * 86_400)) }
    }
}

/// `cors:` — a single-page app served from another origin that calls this app with credentials.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins (`https://spa.example.com`) whose requests get `Access-Control-Allow-Origin`
    /// and `-Credentials` on the proxy's own answers (401/403/503 JSON, `/.trousseau/session`,
    /// `/.trousseau/userinfo`), so their code can read them. Empty: none. The app's own answers
    /// carry the app's own CORS headers.
    pub allowed_origins: Vec<String>,
    /// `authenticate` (default): a CORS preflight is judged like any request — browsers send it
    /// without cookies, so on a protected route it gets 401. `pass`: a genuine preflight
    /// (`OPTIONS` with `Origin` and `Access-Control-Request-Method`, no credentials) goes to the
    /// app without a session, for the app to answer. Per rule: `routes.rules[].cors_preflight`.
    pub preflight: Preflight,
}

/// How a CORS preflight is treated (`cors.preflight`, `routes.rules[].cors_preflight`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preflight {
    /// Judged like any request: without a session, on a protected route, 401.
    #[default]
    Authenticate,
    /// A genuine preflight goes to the app without a session.
    Pass,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig { allowed_origins: Vec::new(), preflight: Preflight::Authenticate }
    }
}

/// `limits:` — what one client, one connection and everyone together may hold at once, and how
/// long the proxy waits for a client. Enforced by [`crate::limits`]; nginx's equivalent directive
/// is named where there is one.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Client connections open at once on `listen`, all worker threads together (nginx
    /// `worker_connections`). Lowered at start to fit the open-file limit. Beyond it, a new
    /// connection takes the place of this worker's longest-idle one, or is closed at once.
    pub max_connections: usize,
    /// Connections open at once on `metrics_listen` (counted apart from `max_connections`).
    pub metrics_max_connections: usize,
    /// Requests being served at once (each may hold a connection to the app); beyond it, 503 with
    /// `Retry-After` (Envoy's circuit breaker `max_requests`).
    pub max_requests_in_flight: usize,
    /// Requests being served at once for one client address (IPv6: per /64; the address the
    /// trusted proxy saw with `proxy.trust_forwarded_headers`); beyond it, 429. `0`: no limit.
    pub max_requests_per_client: usize,
    /// Requests one HTTP/2 connection may have in flight (`SETTINGS_MAX_CONCURRENT_STREAMS`;
    /// nginx `http2_max_concurrent_streams`). Clients queue beyond it by themselves.
    pub http2_max_concurrent_streams: u32,
    /// From a new connection to its first complete request head (nginx
    /// `client_header_timeout`). A later request head on a kept-alive connection is bounded by
    /// `idle_timeout` instead.
    pub header_timeout: HumanDuration,
    /// A connection with nothing in flight is closed after this (nginx `keepalive_timeout`).
    pub idle_timeout: HumanDuration,
    /// How long the proxy waits for a request body's bytes in all, plus one second per
    /// `request_body_min_rate` bytes received (Apache `RequestReadTimeout body=…,MinRate=…`). A
    /// body that falls behind is cut: 408 to the client, the app's request aborted.
    pub request_body_timeout: HumanDuration,
    /// Bytes per second a request body must average, beyond `request_body_timeout`. `0`: the
    /// whole body must arrive within `request_body_timeout` of waiting.
    pub request_body_min_rate: u64,
    /// A response the client stops reading for this long loses its connection to the app
    /// (nginx `send_timeout`). HTTP/1: the client's connection is closed; HTTP/2: the stream
    /// ends when the client reads again, and the connection is closed only if the client does
    /// nothing else on it for another `send_timeout`. Time the app takes to send (a quiet event
    /// stream) does not count.
    pub send_timeout: HumanDuration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = crate::limits::LimitSettings::default();
        LimitsConfig {
            max_connections: d.max_connections,
            metrics_max_connections: d.metrics_max_connections,
            max_requests_in_flight: d.max_requests_in_flight,
            max_requests_per_client: d.max_requests_per_client,
            http2_max_concurrent_streams: d.http2_max_concurrent_streams,
            header_timeout: HumanDuration(d.header_timeout),
            idle_timeout: HumanDuration(d.idle_timeout),
            request_body_timeout: HumanDuration(d.request_body_timeout),
            request_body_min_rate: d.request_body_min_rate,
            send_timeout: HumanDuration(d.send_timeout),
        }
    }
}

/// `api:` — API clients that send a Trousseau access token instead of a cookie.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// `off` (default) or `userinfo`: accept `Authorization: Bearer <access token>`, resolved
    /// through Trousseau's userinfo endpoint (cached).
    pub bearer: Bearer,
    /// New (uncached) bearer tokens this replica may check with Trousseau per second, in bursts of
    /// as many; beyond, 503 with `Retry-After`. Cached tokens never count.
    pub introspections_per_second: u32,
    /// Bearer token checks this replica may have in progress at Trousseau at once.
    pub introspections_in_flight: u32,
}

/// Whether API clients may send a bearer token (`api.bearer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bearer {
    /// Only the session cookie.
    #[default]
    Off,
    /// `Authorization: Bearer` resolved through Trousseau's userinfo endpoint.
    Userinfo,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { bearer: Bearer::Off, introspections_per_second: 10, introspections_in_flight: 10 }
    }
}

/// `proxy:` — forwarding to the upstream.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Forward the browser's `Host` (true) or the upstream's authority (false).
    pub preserve_host: bool,
    /// Extra CA (PEM) trusted for an https upstream.
    pub ca_file: Option<String>,
    /// Time to connect to the upstream.
    pub connect_timeout: HumanDuration,
    /// Time for the upstream to send response headers (bodies may stream longer).
    pub response_timeout: HumanDuration,
    /// Trust `X-Forwarded-For` from the client (only behind a trusted load balancer).
    pub trust_forwarded_headers: bool,
    /// On SIGTERM, how long in-flight requests may take to finish.
    pub drain_timeout: HumanDuration,
    /// On SIGTERM, keep serving this long before draining — `/.trousseau/readyz` answers 503
    /// meanwhile — so the load balancer (Kubernetes' endpoints, an ingress) stops sending new
    /// requests first. A second signal drains at once. Default 0s.
    pub shutdown_delay: HumanDuration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            preserve_host: true,
            ca_file: None,
            connect_timeout: HumanDuration(Duration::from_secs(5)),
            response_timeout: HumanDuration(Duration::from_secs(60)),
            trust_forwarded_headers: false,
            drain_timeout: HumanDuration(Duration::from_secs(25)),
            shutdown_delay: HumanDuration(Duration::ZERO),
        }
    }
}

/// `oidc:` — the Trousseau application.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// `https://auth.keysuite.app/application/o/your-slug/` — with the trailing slash.
    pub issuer: Option<String>,
    /// The OIDC client id.
    pub client_id: Option<String>,
    /// The OIDC client secret.
    pub client_secret: Option<String>,
    /// File holding the client secret (Kubernetes Secret).
    pub client_secret_file: Option<String>,
    /// Scopes to request; `openid` is required.
    pub scopes: Vec<String>,
    /// Where Trousseau sends the browser after sign-out. Default: `public_url + "/"`.
    pub post_logout_redirect_uri: Option<String>,
    /// Extra CA (PEM) trusted for the IdP.
    pub ca_file: Option<String>,
    /// Timeout of one call to Trousseau.
    pub timeout: HumanDuration,
    /// At most one forced re-fetch of Trousseau's keys (JWKS) per this interval, when a token
    /// names an unknown key id; counted from the last attempt, failed ones included.
    pub jwks_refetch_interval: HumanDuration,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            scopes: ["openid", "email", "profile"].map(String::from).to_vec(),
            post_logout_redirect_uri: None,
            ca_file: None,
            timeout: HumanDuration(Duration::from_secs(10)),
            jwks_refetch_interval: HumanDuration(Duration::from_secs(60)),
        }
    }
}

/// `session.redis_sentinel`: where the sentinels are and what they watch.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSentinelConfig {
    /// The name the sentinels know the group by (`sentinel monitor <name> …`).
    pub master_name: String,
    /// The sentinels, `host:port` each (three or more, as Sentinel itself wants).
    pub sentinels: Vec<String>,
    /// File holding the Redis servers' password (`requirepass`).
    #[serde(default)]
    pub password_file: Option<String>,
    /// File holding the sentinels' own password, when they have one.
    #[serde(default)]
    pub sentinel_password_file: Option<String>,
    /// TLS to the sentinels and the servers (`redis_ca_file` names the CA, else the system's).
    #[serde(default)]
    pub tls: bool,
}

/// `session:` — the encrypted session cookie.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Base64 secrets of at least 32 bytes; the first encrypts, all decrypt.
    pub secrets: Vec<String>,
    /// File with one secret per line (Kubernetes Secret).
    pub secrets_file: Option<String>,
    /// Cookie name (prefixed with `__Host-` when public_url is https).
    pub cookie_name: String,
    /// Absolute session lifetime; never longer than the refresh token lives.
    pub max_lifetime: HumanDuration,
    /// `cookie` (everything in the cookie), `memory` or `redis`.
    pub store: StoreKind,
    /// Redis (or Valkey) shared by every replica: `redis://[:password@]host:6379/0`, `rediss://`
    /// for TLS. Needed by `store: redis` and `revocations: redis`; when set, refreshes are also
    /// coordinated across replicas through it.
    pub redis_url: Option<String>,
    /// File holding the Redis URL, password included (Kubernetes Secret).
    pub redis_url_file: Option<String>,
    /// Redis watched by Sentinel, instead of `redis_url`: writes go to the primary the sentinels
    /// name, followed through failovers.
    pub redis_sentinel: Option<RedisSentinelConfig>,
    /// Redis Cluster, instead of `redis_url`: some of its nodes (`host:port`, or `redis://` /
    /// `rediss://` URLs with the password); the others are learned from them.
    pub redis_cluster: Option<Vec<String>>,
    /// CA (PEM) that signed the certificate of a Redis reached over TLS (`rediss://`, or
    /// `redis_sentinel.tls`), instead of the system's.
    pub redis_ca_file: Option<String>,
    /// Where back-channel revocations live: `memory` (this replica) or `redis` (every replica).
    /// Default: `redis` when a Redis URL is set, `memory` otherwise.
    pub revocations: Option<RevocationKind>,
    /// With `revocations: redis`, how old a replica's cached answer may be (a logout reaches every
    /// replica within it); `0s` asks Redis on every request.
    pub revocation_staleness: HumanDuration,
    /// Refresh this long before the access token expires.
    pub refresh_skew: HumanDuration,
    /// When Trousseau is unreachable, keep serving the last identity this long past expiry.
    pub refresh_grace: HumanDuration,
    /// With `store: memory` or `redis`: most sessions one user (`sub`) may have at once; a new
    /// sign-in beyond it ends that user's oldest session.
    pub max_sessions_per_user: u32,
    /// With `store: memory`: most memory (MiB) the stored sessions may take; beyond it the least
    /// recently used sessions end.
    pub memory_store_max_mib: u32,
    /// End the websockets and long responses opened for a session when the session ends
    /// (sign-out, back-channel logout, refresh refused, rule no longer met, `max_lifetime`).
    pub end_open_connections: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            secrets: Vec::new(),
            secrets_file: None,
            cookie_name: "trousseau_session".into(),
            max_lifetime: HumanDuration(Duration::from_secs(30 * 86_400)),
            store: StoreKind::Cookie,
            redis_url: None,
            redis_url_file: None,
            redis_sentinel: None,
            redis_cluster: None,
            redis_ca_file: None,
            revocations: None,
            revocation_staleness: HumanDuration(Duration::from_secs(1)),
            refresh_skew: HumanDuration(Duration::from_secs(30)),
            refresh_grace: HumanDuration(Duration::from_secs(300)),
            max_sessions_per_user: 10,
            memory_store_max_mib: 256,
            end_open_connections: true,
        }
    }
}

/// `identity:` — the signed assertion and plain headers.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// ES256 PKCS#8 PEM file(s); the first signs, all are published. Absent: an ephemeral key.
    pub signing_key_file: Option<OneOrMany>,
    /// `aud` of the assertion. Default: `oidc.client_id`.
    pub audience: Option<String>,
    /// Lifetime of one assertion.
    pub assertion_ttl: HumanDuration,
    /// Forward the Trousseau access token as `X-Trousseau-Access-Token`.
    pub pass_access_token: bool,
    /// Extra header names for apps written for another proxy: `trousseau` (none), `oauth2-proxy`
    /// or `authentik`.
    pub headers_preset: HeadersPreset,
    /// Custom header → claim mapping, e.g. `X-User-Email: email`.
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            signing_key_file: None,
            audience: None,
            assertion_ttl: HumanDuration(Duration::from_secs(60)),
            pass_access_token: false,
            headers_preset: HeadersPreset::Trousseau,
            headers: Default::default(),
        }
    }
}

/// `organization:` — Trousseau tier 3.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrganizationConfig {
    /// A user with no (allowed) organization gets 403.
    pub required: bool,
    /// Organization ids or slugs; empty = any.
    pub allowed: Vec<String>,
    /// Roles allowed in the selected organization; empty = any.
    pub roles: Vec<String>,
}

/// `routes:` — what needs no session, and per-path rules.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesConfig {
    /// Paths proxied without a session (identity headers still stripped). `*` matches within one
    /// segment when inside the path, and anything when it ends the pattern.
    pub public: Vec<String>,
    /// First match wins; no match = any signed-in user.
    pub rules: Vec<RuleConfig>,
}

/// One route rule.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Path pattern.
    pub path: String,
    /// HTTP methods the rule applies to; empty = all.
    pub methods: Vec<String>,
    /// Roles (in the selected organization) allowed; empty = any.
    pub roles: Vec<String>,
    /// Organization ids or slugs allowed; empty = any.
    pub organizations: Vec<String>,
    /// Emails allowed; empty = any.
    pub emails: Vec<String>,
    /// Email domains allowed; empty = any.
    pub email_domains: Vec<String>,
    /// `pass` or `authenticate`: how CORS preflights to this rule's paths are treated (default:
    /// `cors.preflight`).
    pub cors_preflight: Option<Preflight>,
}


/// The effective configuration as YAML with every secret replaced by `<redacted>`.
pub fn redacted_yaml(file: &FileConfig) -> String {
    fn redact(node: &mut serde_yaml::Value, path: &[&str]) {
        let Some((first, rest)) = path.split_first() else { return };
        let Some(child) = node.as_mapping_mut().and_then(|m| m.get_mut(*first)) else { return };
        if rest.is_empty() {
            if !child.is_null() {
                *child = serde_yaml::Value::String("<redacted>".into());
            }
        } else {
            redact(child, rest);
        }
    }
    let mut tree = serde_yaml::to_value(file).unwrap_or(serde_yaml::Value::Null);
    for key in SECRET_KEYS {
        redact(&mut tree, &key.split('.').collect::<Vec<_>>());
    }
    serde_yaml::to_string(&tree).unwrap_or_default()
}
