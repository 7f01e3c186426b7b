//! Configuration: the YAML file, environment overrides and `*_file` secrets, validated once at start
//! into a ready-to-use [`Settings`] (parsed URLs, loaded secrets, compiled rules).
//!
//! Precedence is flag > environment > file > default. Every key can be set from the environment as
//! `TROUSSEAU_PROXY_` + the upper-cased path with `_` between levels
//! (`TROUSSEAU_PROXY_OIDC_CLIENT_SECRET`). Unknown keys are an error, and every error names the key
//! and, when it comes from the file, the line.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "TROUSSEAU_PROXY_";

/// What went wrong while reading or validating the configuration. Every variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML does not parse or does not fit the schema (unknown key, wrong type).
    #[error("{origin}: {message}")]
    Syntax {
        /// `config.yaml line 12` or `environment variable TROUSSEAU_PROXY_…`.
        origin: String,
        /// serde's message, which names the key.
        message: String,
    },
    /// A key has a value that is not acceptable.
    #[error("{key}{line}: {message}", line = line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        /// Dotted path of the key, e.g. `oidc.issuer`.
        key: String,
        /// Line in the file where the key is, when it is in the file.
        line: Option<usize>,
        /// What is wrong and what to do.
        message: String,
    },
    /// A key set from the environment or a flag has a value that is not acceptable.
    #[error("{key} ({origin}): {message}")]
    InvalidOverride {
        /// Dotted path of the key, e.g. `listen`.
        key: String,
        /// Where the value came from: `environment variable TROUSSEAU_PROXY_LISTEN`, `flag --listen`.
        origin: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// A duration written as `90s`, `5m`, `12h`, `30d` (or a bare number of seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `90s`, `5m`, `12h`, `30d`, `250ms` or a bare number of seconds.
    pub fn parse(text: &str) -> Result<HumanDuration, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration: write it like 90s, 5m, 12h or 30d"))?;
        let secs = match unit.trim() {
            "" | "s" => n,
            "ms" => return Ok(HumanDuration(Duration::from_millis(n))),
            "m" => n.saturating_mul(60),
            "h" => n.saturating_mul(3600),
            "d" => n.saturating_mul(86_400),
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}`; use ms, s, m, h or d (90s, 5m, 12h, 30d)"
                ))
            }
        };
        Ok(HumanDuration(Duration::from_secs(secs)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_millis() != 0 {
            return write!(f, "{}ms", d.as_millis());
        }
        let s = d.as_secs();
        match s {
            s if s != 0 && s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            s if s != 0 && s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s != 0 && s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(HumanDuration(Duration::from_secs(n))),
            Raw::Text(t) => HumanDuration::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One value or a list of them (`signing_key_file: a.pem` or `signing_key_file: [a.pem, b.pem]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a slice-like list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

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
    /// Connection and request resource limits.
    pub limits: LimitsConfig,
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
    pub bearer: String,
    /// New (uncached) bearer tokens this replica may check with Trousseau per second, in bursts of
    /// as many; beyond, 503 with `Retry-After`. Cached tokens never count.
    pub introspections_per_second: u32,
    /// Bearer token checks this replica may have in progress at Trousseau at once.
    pub introspections_in_flight: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { bearer: "off".into(), introspections_per_second: 10, introspections_in_flight: 10 }
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
    pub store: String,
    /// Redis (or Valkey) shared by every replica: `redis://[:password@]host:6379/0`, `rediss://`
    /// for TLS. Needed by `store: redis` and `revocations: redis`; when set, refreshes are also
    /// coordinated across replicas through it.
    pub redis_url: Option<String>,
    /// File holding the Redis URL, password included (Kubernetes Secret).
    pub redis_url_file: Option<String>,
    /// CA (PEM) that signed the certificate of a `rediss://` Redis, instead of the system's.
    pub redis_ca_file: Option<String>,
    /// Where back-channel revocations live: `memory` (this replica) or `redis` (every replica).
    /// Default: `redis` when a Redis URL is set, `memory` otherwise.
    pub revocations: Option<String>,
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
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            secrets: Vec::new(),
            secrets_file: None,
            cookie_name: "trousseau_session".into(),
            max_lifetime: HumanDuration(Duration::from_secs(30 * 86_400)),
            store: "cookie".into(),
            redis_url: None,
            redis_url_file: None,
            redis_ca_file: None,
            revocations: None,
            revocation_staleness: HumanDuration(Duration::from_secs(1)),
            refresh_skew: HumanDuration(Duration::from_secs(30)),
            refresh_grace: HumanDuration(Duration::from_secs(300)),
            max_sessions_per_user: 10,
            memory_store_max_mib: 256,
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
    pub headers_preset: String,
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
            headers_preset: "trousseau".into(),
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
}

/// Where a secret that must be redacted in `check-config` lives.
const SECRET_KEYS: &[&str] = &["oidc.client_secret", "session.secrets", "session.redis_url"];

/// Every settable key path, for mapping environment variables onto the tree (`_` is ambiguous
/// between levels and inside names, so we match against the known paths).
const KEY_PATHS: &[&str] = &[
    "listen",
    "public_url",
    "upstream",
    "metrics_listen",
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
const LIST_KEYS: &[&str] = &[
    "oidc.scopes",
    "session.secrets",
    "organization.allowed",
    "organization.roles",
    "routes.public",
    "identity.signing_key_file",
];

/// Keys whose value is a number: from the environment, `20` is that number, not the text "20".
const NUMBER_KEYS: &[&str] = &[
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
const NON_KEY_VARS: &[&str] = &["TROUSSEAU_PROXY_CONFIG", "TROUSSEAU_PROXY_LOG"];

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

/// Reads the file (if any), applies environment overrides, and returns the raw config plus the
/// file text (used to point errors at lines).
pub fn load_file_config(
    path: Option<&Path>,
    env: &[(String, String)],
) -> Result<(FileConfig, SourceText), ConfigError> {
    let (text, name) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.into(), source })?,
            p.display().to_string(),
        ),
        None => (String::new(), "(no config file)".to_string()),
    };
    parse_file_config(SourceText { name, text, overrides: Vec::new() }, env)
}

/// [`load_file_config`] once the file is read: parses `source` and applies the environment
/// overrides of `env`.
pub fn parse_file_config(
    mut source: SourceText,
    env: &[(String, String)],
) -> Result<(FileConfig, SourceText), ConfigError> {
    let overrides: Vec<(&str, &str, &str)> = env
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(ENV_PREFIX)?;
            let path = KEY_PATHS.iter().find(|p| p.replace('.', "_").eq_ignore_ascii_case(rest))?;
            Some((*path, k.as_str(), v.as_str()))
        })
        .collect();
    let unknown_env: Vec<&String> = env
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !NON_KEY_VARS.contains(&k.as_str()))
        .filter(|k| {
            k.strip_prefix(ENV_PREFIX).is_some_and(|rest| {
                !KEY_PATHS.iter().any(|p| p.replace('.', "_").eq_ignore_ascii_case(rest))
            })
        })
        .collect();
    if let Some(k) = unknown_env.first() {
        return Err(ConfigError::Syntax {
            origin: format!("environment variable {k}"),
            message: "does not name a configuration key (see README, Configuration)".into(),
        });
    }

    let parse_text = if source.text.trim().is_empty() { "{}" } else { source.text.as_str() };
    // First pass straight from the text: serde_yaml's errors then carry the line.
    let file: FileConfig = serde_yaml::from_str(parse_text).map_err(|e| yaml_error(&source, e))?;
    if overrides.is_empty() {
        return Ok((file, source));
    }
    let mut tree: serde_yaml::Value = serde_yaml::from_str(parse_text).map_err(|e| yaml_error(&source, e))?;
    if tree.is_null() {
        tree = serde_yaml::Value::Mapping(Default::default());
    }
    // One variable at a time, so a value that does not fit is reported against its variable
    // (serde's message then has no key path of its own); the file alone already fitted.
    let mut merged = file;
    for (path, var, value) in &overrides {
        let origin = format!("environment variable {var}");
        let value = env_value(path, value).map_err(|message| ConfigError::Syntax {
            origin: origin.clone(),
            message: if is_secret_path(path) { format!("{path}: is not valid YAML (value redacted)") } else { message },
        })?;
        set_path(&mut tree, path, value);
        merged = serde_yaml::from_value(tree.clone()).map_err(|e| {
            let message = e.to_string();
            let message = if is_secret_path(path) { without_value(&message) } else { message };
            ConfigError::Syntax { origin: origin.clone(), message: format!("{path}: {message}") }
        })?;
        source.overrides.push(((*path).to_string(), origin));
    }
    Ok((merged, source))
}

/// Whether a key path (`session.secrets`, `session.secrets[0]`) is or lies inside a secret key.
fn is_secret_path(path: &str) -> bool {
    SECRET_KEYS.iter().any(|key| {
        path.strip_prefix(key).is_some_and(|rest| rest.is_empty() || rest.starts_with('[') || rest.starts_with('.'))
    })
}

/// serde's message without the value it quotes: `invalid type: string "…", expected a sequence`
/// becomes `invalid type: string (value redacted), expected a sequence`. Any other message is
/// replaced whole, since it could quote the value in a way not known here.
fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        let Some(rest) = message.strip_prefix(prefix) else { continue };
        // The value is quoted before serde's own `, expected …`, so the last one is serde's.
        let Some((unexpected, expected)) = rest.rsplit_once(", expected ") else { continue };
        let kind = unexpected.split(['"', '`', '\'']).next().unwrap_or("").trim();
        let kind = if !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b' ') { kind } else { "value" };
        return format!("{prefix}{kind} (value redacted), expected {expected}");
    }
    "this value does not fit the key (value redacted)".into()
}

fn yaml_error(source: &SourceText, e: serde_yaml::Error) -> ConfigError {
    let origin = match e.location() {
        Some(loc) => format!("{} line {} column {}", source.name, loc.line(), loc.column()),
        None => source.name.clone(),
    };
    // serde_yaml appends "at line N column M" itself (last, after any quoted value); keep the
    // message focused on the key.
    let message = e.to_string();
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    // `session.secrets: invalid type: string "<the secret>", …`: name the key, never the value.
    let message = match message.split_once(": ") {
        Some((path, rest)) if is_secret_path(path) => format!("{path}: {}", without_value(rest)),
        _ => message,
    };
    ConfigError::Syntax { origin, message }
}

fn env_value(path: &str, value: &str) -> Result<serde_yaml::Value, String> {
    if LIST_KEYS.contains(&path) && !value.trim_start().starts_with('[') {
        let items = value
            .split(|c| c == ',' || c == ' ' && path == "oidc.scopes")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| serde_yaml::Value::String(s.to_string()))
            .collect();
        return Ok(serde_yaml::Value::Sequence(items));
    }
    if path == "routes.rules" || path == "identity.headers" || LIST_KEYS.contains(&path) {
        return serde_yaml::from_str(value).map_err(|e| format!("is not valid YAML: {e}"));
    }
    // Scalars: let YAML decide bool/number, but keep strings that merely look like them intact
    // for string keys (a secret of "123" stays a string).
    match serde_yaml::from_str::<serde_yaml::Value>(value) {
        Ok(v @ (serde_yaml::Value::Bool(_) | serde_yaml::Value::Number(_)))
            if path.ends_with("preserve_host")
                || path.ends_with("trust_forwarded_headers")
                || path.ends_with("pass_access_token")
                || path.ends_with("required")
                || NUMBER_KEYS.contains(&path) =>
        {
            Ok(v)
        }
        _ => Ok(serde_yaml::Value::String(value.to_string())),
    }
}

fn set_path(tree: &mut serde_yaml::Value, path: &str, value: serde_yaml::Value) {
    let mut node = tree;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !node.is_mapping() {
            *node = serde_yaml::Value::Mapping(Default::default());
        }
        let map = node.as_mapping_mut().expect("just made a mapping");
        let key = serde_yaml::Value::String((*part).to_string());
        if i + 1 == parts.len() {
            map.insert(key, value);
            return;
        }
        node = map.entry(key).or_insert(serde_yaml::Value::Mapping(Default::default()));
    }
}

/// The text of the configuration file, kept to point validation errors at lines, and which keys
/// the environment or a flag set instead (an error about those names the variable, not a line).
#[derive(Clone, Debug, Default)]
pub struct SourceText {
    /// File name for messages.
    pub name: String,
    /// Whole text.
    pub text: String,
    /// Key paths set by an environment variable or a flag, with where: `("listen", "environment
    /// variable TROUSSEAU_PROXY_LISTEN")`. A later entry for the same key wins (flags come last).
    pub overrides: Vec<(String, String)>,
}

impl SourceText {
    /// The error for `key`, pointing at where its value came from: the environment variable or
    /// flag that set it, else its line in the file.
    pub fn invalid(&self, key: &str, message: String) -> ConfigError {
        let set_by = self.overrides.iter().rev().find(|(path, _)| {
            key == path || key.strip_prefix(path.as_str()).is_some_and(|rest| rest.starts_with('.'))
        });
        match set_by {
            Some((_, origin)) => ConfigError::InvalidOverride { key: key.to_string(), origin: origin.clone(), message },
            None => ConfigError::Invalid { key: key.to_string(), line: self.line_of(key), message },
        }
    }

    /// The 1-based line where a dotted key path is written, if it is in the file.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut want = path.split('.').peekable();
        let mut indent_stack: Vec<usize> = Vec::new();
        let mut target = want.next()?;
        for (i, line) in self.text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if let Some(&parent) = indent_stack.last() {
                if indent <= parent {
                    // Left the block we were searching in: the key is not in the file.
                    return None;
                }
            } else if indent != 0 {
                continue;
            }
            let key = trimmed.split(':').next().unwrap_or("").trim().trim_matches('"');
            if trimmed.contains(':') && key == target {
                match want.next() {
                    None => return Some(i + 1),
                    Some(next) => {
                        indent_stack.push(indent);
                        target = next;
                    }
                }
            }
        }
        None
    }
}

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
    /// Redis URL (credentials included) when Redis is used: `store: redis`, `revocations: redis`,
    /// and refresh coordination across replicas.
    pub redis_url: Option<String>,
    /// CA trusted for a `rediss://` Redis (instead of the system's).
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
}

impl fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSettings")
            .field("secrets", &format_args!("<{} redacted>", self.secrets.len()))
            .field("cookie_name", &self.cookie_name)
            .field("max_lifetime", &self.max_lifetime)
            .field("store", &self.store)
            .field("redis_url", &self.redis_url.as_deref().map(crate::session::redis::redacted_url))
            .field("revocations", &self.revocations)
            .finish_non_exhaustive()
    }
}

/// Where session data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// The whole session sealed in the cookie.
    Cookie,
    /// In this process's memory; the cookie carries a sealed handle.
    Memory,
    /// In Redis; the cookie carries a sealed handle.
    Redis,
}

/// Where back-channel revocations live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Values given on the command line; they win over everything else.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--upstream`.
    pub upstream: Option<String>,
}

/// Reads, merges and validates: the one entry point for `run` and `check-config`.
pub fn load(
    path: Option<&Path>,
    env: &[(String, String)],
    flags: &Flags,
) -> Result<(Settings, FileConfig), ConfigError> {
    let (mut file, mut source) = load_file_config(path, env)?;
    if let Some(listen) = &flags.listen {
        file.listen = Some(listen.clone());
        source.overrides.push(("listen".into(), "flag --listen".into()));
    }
    if let Some(upstream) = &flags.upstream {
        file.upstream = Some(upstream.clone());
        source.overrides.push(("upstream".into(), "flag --upstream".into()));
    }
    let settings = validate(&file, &source)?;
    Ok((settings, file))
}

/// Turns the raw config into [`Settings`], checking every key.
pub fn validate(file: &FileConfig, source: &SourceText) -> Result<Settings, ConfigError> {
    let invalid = |key: &str, message: String| source.invalid(key, message);
    let listen_text = file.listen.as_deref().unwrap_or("127.0.0.1:4180");
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|_| invalid("listen", format!("`{listen_text}` is not an address like 0.0.0.0:4180")))?;

    let public_text = file
        .public_url
        .as_deref()
        .ok_or_else(|| invalid("public_url", "is required: the URL browsers use to reach the proxy".into()))?;
    let public_url = parse_http_url(public_text).map_err(|m| invalid("public_url", m))?;
    if public_url.query().is_some() || public_url.fragment().is_some() || public_url.path() != "/" {
        return Err(invalid(
            "public_url",
            format!("`{public_text}` must be an origin only (scheme, host, port), like https://app.example.com"),
        ));
    }
    let public_origin = public_url.as_str().trim_end_matches('/').to_string();
    let secure_cookies = public_url.scheme() == "https";

    let upstream_text = file
        .upstream
        .as_deref()
        .ok_or_else(|| invalid("upstream", "is required: the URL of the app behind the proxy".into()))?;
    let upstream = parse_http_url(upstream_text).map_err(|m| invalid("upstream", m))?;

    let metrics_listen = match &file.metrics_listen {
        None => None,
        Some(t) => Some(
            t.parse()
                .map_err(|_| invalid("metrics_listen", format!("`{t}` is not an address like 127.0.0.1:9180")))?,
        ),
    };

    // OIDC
    let issuer = file
        .oidc
        .issuer
        .clone()
        .ok_or_else(|| invalid("oidc.issuer", "is required, e.g. https://auth.keysuite.app/application/o/your-slug/".into()))?;
    parse_http_url(&issuer).map_err(|m| invalid("oidc.issuer", m))?;
    if issuer.contains("/application/o/") && !issuer.ends_with('/') {
        return Err(invalid(
            "oidc.issuer",
            format!("Trousseau issuers end with a slash: write `{issuer}/`"),
        ));
    }
    let client_id = file
        .oidc
        .client_id
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("oidc.client_id", "is required".into()))?;
    let client_secret = secret_value(
        file.oidc.client_secret.as_deref(),
        file.oidc.client_secret_file.as_deref(),
        "oidc.client_secret",
        source,
    )?
    .ok_or_else(|| invalid("oidc.client_secret", "is required (or oidc.client_secret_file)".into()))?;
    if client_secret.trim().is_empty() {
        let key = if file.oidc.client_secret_file.is_some() { "oidc.client_secret_file" } else { "oidc.client_secret" };
        return Err(invalid(key, "is empty: Trousseau needs the client secret of the application".into()));
    }
    if !file.oidc.scopes.iter().any(|s| s == "openid") {
        return Err(invalid("oidc.scopes", "must include `openid`".into()));
    }
    let mut scopes = vec!["openid".to_string()];
    scopes.extend(file.oidc.scopes.iter().filter(|s| *s != "openid").cloned());
    if let Some(bad) = scopes.iter().find(|s| s.is_empty() || s.contains(char::is_whitespace)) {
        return Err(invalid("oidc.scopes", format!("`{bad}` is not a scope name")));
    }
    let redirect_uri = format!("{public_origin}/.trousseau/callback");
    let post_logout_redirect_uri = match &file.oidc.post_logout_redirect_uri {
        Some(u) => {
            parse_http_url(u).map_err(|m| invalid("oidc.post_logout_redirect_uri", m))?;
            u.clone()
        }
        None => format!("{public_origin}/"),
    };
    let jwks_refetch_interval = file.oidc.jwks_refetch_interval.0;
    if jwks_refetch_interval < Duration::from_secs(1) || jwks_refetch_interval > Duration::from_secs(3600) {
        return Err(invalid("oidc.jwks_refetch_interval", "must be between 1s and 1h (default 1m)".into()));
    }
    let oidc = OidcSettings {
        issuer,
        client_id: client_id.clone(),
        client_secret,
        scopes,
        redirect_uri,
        post_logout_redirect_uri,
        ca_file: file.oidc.ca_file.as_ref().map(PathBuf::from),
        timeout: file.oidc.timeout.0,
        jwks_refetch_interval,
    };

    // Session
    let mut secret_texts = file.session.secrets.clone();
    if let Some(path) = &file.session.secrets_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("session.secrets_file", format!("cannot read `{path}`: {e}")))?;
        secret_texts.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
    }
    if secret_texts.is_empty() {
        return Err(invalid(
            "session.secrets",
            "is required: generate one with `trousseau-proxy keys generate`".into(),
        ));
    }
    let secrets = secret_texts
        .iter()
        .enumerate()
        .map(|(i, s)| {
            crate::session::seal::parse_secret(s)
                .map_err(|e| invalid("session.secrets", format!("secret #{}: {e}", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cookie_name = file.session.cookie_name.clone();
    if cookie_name.is_empty()
        || !cookie_name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(invalid("session.cookie_name", format!("`{cookie_name}`: use letters, digits, `_` and `-` only")));
    }
    let max_lifetime = file.session.max_lifetime.0;
    if max_lifetime < Duration::from_secs(60) || max_lifetime > Duration::from_secs(30 * 86_400) {
        return Err(invalid(
            "session.max_lifetime",
            "must be between 1m and 30d (Trousseau refresh tokens live 30 days)".into(),
        ));
    }
    let store = match file.session.store.as_str() {
        "cookie" => StoreKind::Cookie,
        "memory" => StoreKind::Memory,
        "redis" => StoreKind::Redis,
        other => return Err(invalid("session.store", format!("`{other}`: use cookie, memory or redis"))),
    };
    let redis_url = secret_value(
        file.session.redis_url.as_deref(),
        file.session.redis_url_file.as_deref(),
        "session.redis_url",
        source,
    )?
    .map(|url| url.trim().to_string());
    if let Some(url) = &redis_url {
        check_redis_url(url).map_err(|m| invalid("session.redis_url", m))?;
    }
    if file.session.redis_ca_file.is_some() && !redis_url.as_deref().is_some_and(|u| u.starts_with("rediss://") || u.starts_with("valkeys://")) {
        return Err(invalid("session.redis_ca_file", "is only used with a rediss:// (TLS) session.redis_url".into()));
    }
    if store == StoreKind::Redis && redis_url.is_none() {
        return Err(invalid("session.store", "`redis` needs session.redis_url (or session.redis_url_file)".into()));
    }
    let revocations = match file.session.revocations.as_deref() {
        None if redis_url.is_some() => RevocationKind::Redis,
        None | Some("memory") => RevocationKind::Memory,
        Some("redis") => RevocationKind::Redis,
        Some(other) => return Err(invalid("session.revocations", format!("`{other}`: use memory or redis"))),
    };
    if revocations == RevocationKind::Redis && redis_url.is_none() {
        return Err(invalid("session.revocations", "`redis` needs session.redis_url (or session.redis_url_file)".into()));
    }
    if revocations == RevocationKind::Memory && store == StoreKind::Redis {
        return Err(invalid(
            "session.revocations",
            "`memory` with session.store: redis would end a back-channel-logged-out session on one replica only; \
             remove session.revocations (it defaults to redis) or set it to redis"
                .into(),
        ));
    }
    let revocation_staleness = file.session.revocation_staleness.0;
    if revocation_staleness > Duration::from_secs(30) {
        return Err(invalid(
            "session.revocation_staleness",
            "must be at most 30s: a back-channel logout reaches every replica only within it (default 1s)".into(),
        ));
    }
    let max_sessions_per_user = file.session.max_sessions_per_user;
    if !(1..=1000).contains(&max_sessions_per_user) {
        return Err(invalid("session.max_sessions_per_user", format!("{max_sessions_per_user}: must be between 1 and 1000")));
    }
    let memory_store_max_mib = file.session.memory_store_max_mib;
    if !(1..=1_048_576).contains(&memory_store_max_mib) {
        return Err(invalid("session.memory_store_max_mib", format!("{memory_store_max_mib}: must be between 1 and 1048576 (1 TiB)")));
    }
    let session = SessionSettings {
        secrets,
        cookie_name,
        max_lifetime,
        store,
        redis_url,
        redis_ca_file: file.session.redis_ca_file.as_ref().map(PathBuf::from),
        revocations,
        revocation_staleness,
        refresh_skew: file.session.refresh_skew.0,
        refresh_grace: file.session.refresh_grace.0,
        max_sessions_per_user,
        memory_store_max_bytes: u64::from(memory_store_max_mib) * 1024 * 1024,
    };

    // Identity
    let mut signing_keys_pem = Vec::new();
    if let Some(files) = &file.identity.signing_key_file {
        for path in files.to_vec() {
            let pem = std::fs::read_to_string(&path)
                .map_err(|e| invalid("identity.signing_key_file", format!("cannot read `{path}`: {e}")))?;
            signing_keys_pem.push(pem);
        }
    }
    let ttl = file.identity.assertion_ttl.0;
    if ttl < Duration::from_secs(10) || ttl > Duration::from_secs(3600) {
        return Err(invalid("identity.assertion_ttl", "must be between 10s and 1h".into()));
    }
    let extra_headers = crate::identity::ExtraHeaders::new(&file.identity.headers_preset, &file.identity.headers)
        .map_err(|(key, message)| invalid(key, message))?;
    let identity = IdentitySettings {
        signing_keys_pem,
        audience: file.identity.audience.clone().unwrap_or(client_id),
        assertion_ttl: ttl,
        pass_access_token: file.identity.pass_access_token,
        extra_headers,
    };
    let bearer_userinfo = match file.api.bearer.as_str() {
        "off" => false,
        "userinfo" => true,
        other => return Err(invalid("api.bearer", format!("`{other}`: use off or userinfo"))),
    };
    let bearer_limits = BearerLimits { per_second: file.api.introspections_per_second, in_flight: file.api.introspections_in_flight };
    if !(1..=10_000).contains(&bearer_limits.per_second) {
        return Err(invalid("api.introspections_per_second", "must be between 1 and 10000 (default 10)".into()));
    }
    if !(1..=1_000).contains(&bearer_limits.in_flight) {
        return Err(invalid("api.introspections_in_flight", "must be between 1 and 1000 (default 10)".into()));
    }

    for (i, p) in file.routes.public.iter().enumerate() {
        if !p.starts_with('/') {
            return Err(invalid("routes.public", format!("entry #{}: `{p}` must start with /", i + 1)));
        }
    }
    for (i, r) in file.routes.rules.iter().enumerate() {
        if !r.path.starts_with('/') {
            return Err(invalid("routes.rules", format!("rule #{}: path `{}` must start with /", i + 1, r.path)));
        }
    }

    let limits = validate_limits(&file.limits, file.proxy.trust_forwarded_headers).map_err(|(key, message)| invalid(key, message))?;

    Ok(Settings {
        listen,
        public_url,
        public_origin,
        secure_cookies,
        upstream,
        metrics_listen,
        proxy: file.proxy.clone(),
        oidc,
        session,
        identity,
        organization: file.organization.clone(),
        routes: file.routes.clone(),
        bearer_userinfo,
        bearer_limits,
        limits,
    })
}

/// `limits:`, checked; an error names its key.
fn validate_limits(l: &LimitsConfig, trust_forwarded: bool) -> Result<crate::limits::LimitSettings, (&'static str, String)> {
    let positive = |key: &'static str, n: usize| if n == 0 { Err((key, "must be at least 1".to_string())) } else { Ok(n) };
    let timeout = |key: &'static str, d: HumanDuration| {
        if d.0 < Duration::from_millis(10) || d.0 > Duration::from_secs(3600) {
            Err((key, format!("`{d}` must be between 10ms and 1h")))
        } else {
            Ok(d.0)
        }
    };
    if !(1..=10_000).contains(&l.http2_max_concurrent_streams) {
        return Err(("limits.http2_max_concurrent_streams", "must be between 1 and 10000 (default 100)".into()));
    }
    Ok(crate::limits::LimitSettings {
        max_connections: positive("limits.max_connections", l.max_connections)?,
        metrics_max_connections: positive("limits.metrics_max_connections", l.metrics_max_connections)?,
        max_requests_in_flight: positive("limits.max_requests_in_flight", l.max_requests_in_flight)?,
        max_requests_per_client: l.max_requests_per_client,
        http2_max_concurrent_streams: l.http2_max_concurrent_streams,
        header_timeout: timeout("limits.header_timeout", l.header_timeout)?,
        idle_timeout: timeout("limits.idle_timeout", l.idle_timeout)?,
        request_body_timeout: timeout("limits.request_body_timeout", l.request_body_timeout)?,
        request_body_min_rate: l.request_body_min_rate,
        send_timeout: timeout("limits.send_timeout", l.send_timeout)?,
        client_from_forwarded: trust_forwarded,
    })
}

/// A Redis URL the client accepts. Messages never repeat the URL (it may hold the password).
fn check_redis_url(text: &str) -> Result<(), String> {
    let shown = crate::session::redis::redacted_url(text);
    let url = Url::parse(text).map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "redis" | "rediss" | "valkey" | "valkeys" | "redis+unix" | "valkey+unix" | "unix") {
        return Err(format!("`{shown}` must be a redis:// or rediss:// (TLS) URL, like redis://:password@redis:6379/0"));
    }
    ::redis::IntoConnectionInfo::into_connection_info(text).map_err(|e| format!("`{shown}`: {e}"))?;
    Ok(())
}

fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{text}` must be an http:// or https:// URL"));
    }
    Ok(url)
}

/// A secret from its inline key or its `*_file` key (not both).
fn secret_value(
    inline: Option<&str>,
    file: Option<&str>,
    key: &str,
    source: &SourceText,
) -> Result<Option<String>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(source.invalid(key, format!("set either {key} or {key}_file, not both"))),
        (Some(v), None) => Ok(Some(v.to_string())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| source.invalid(&format!("{key}_file"), format!("cannot read `{path}`: {e}")))?;
            Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
        }
        (None, None) => Ok(None),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn minimal() -> String {
        format!(
            "public_url: https://app.example.com\nupstream: http://127.0.0.1:8080\noidc:\n  issuer: https://auth.keysuite.app/application/o/x/\n  client_id: x\n  client_secret: s3cr3t\nsession:\n  secrets: [\"{SECRET}\"]\n"
        )
    }

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        // One file per call: tests run in parallel and many texts have the same length.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tp-config-{}-{call}", std::process::id()));
        std::fs::write(&dir, text).unwrap();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let r = load(Some(&dir), &env, &Flags::default()).map(|(s, _)| s);
        let _ = std::fs::remove_file(&dir);
        r
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(HumanDuration::parse("90s").unwrap().0, Duration::from_secs(90));
        assert_eq!(HumanDuration::parse("5m").unwrap().0, Duration::from_secs(300));
        assert_eq!(HumanDuration::parse("12h").unwrap().0, Duration::from_secs(43_200));
        assert_eq!(HumanDuration::parse("30d").unwrap().0, Duration::from_secs(2_592_000));
        assert_eq!(HumanDuration::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert!(HumanDuration::parse("5 weeks").is_err());
        assert_eq!(HumanDuration(Duration::from_secs(300)).to_string(), "5m");
    }

    #[test]
    fn minimal_config_is_valid_and_secure_for_https() {
        let s = load_text(&minimal(), &[]).unwrap();
        assert!(s.secure_cookies);
        assert_eq!(s.oidc.redirect_uri, "https://app.example.com/.trousseau/callback");
        assert_eq!(s.identity.audience, "x");
        assert_eq!(s.listen.to_string(), "127.0.0.1:4180");
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let text = minimal() + "  cookie_nmae: oops\n";
        let err = load_text(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("cookie_nmae"), "{err}");
        assert!(err.contains("line 9"), "{err}");
    }

    #[test]
    fn invalid_value_names_key_and_line() {
        let text = minimal().replace("upstream: http://127.0.0.1:8080", "upstream: ftp://x");
        let err = load_text(&text, &[]).unwrap_err().to_string();
        assert!(err.starts_with("upstream (line 2)"), "{err}");
    }

    #[test]
    fn issuer_without_trailing_slash_is_rejected() {
        let text = minimal().replace("/application/o/x/", "/application/o/x");
        let err = load_text(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("oidc.issuer (line 4)") && err.contains("end with a slash"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let s = load_text(
            &minimal(),
            &[
                ("TROUSSEAU_PROXY_OIDC_CLIENT_SECRET", "from-env"),
                ("TROUSSEAU_PROXY_SESSION_COOKIE_NAME", "envcookie"),
                ("TROUSSEAU_PROXY_OIDC_SCOPES", "openid email trousseau:organization"),
                ("TROUSSEAU_PROXY_PROXY_PRESERVE_HOST", "false"),
            ],
        )
        .unwrap();
        assert_eq!(s.oidc.client_secret, "from-env");
        assert_eq!(s.session.cookie_name, "envcookie");
        assert_eq!(s.oidc.scopes, ["openid", "email", "trousseau:organization"]);
        assert!(!s.proxy.preserve_host);
    }

    #[test]
    fn unknown_environment_key_is_an_error() {
        let err = load_text(&minimal(), &[("TROUSSEAU_PROXY_OIDC_CLIENT_SECRETT", "x")]).unwrap_err().to_string();
        assert!(err.contains("TROUSSEAU_PROXY_OIDC_CLIENT_SECRETT"), "{err}");
    }

    #[test]
    fn secret_files_are_read() {
        let path = std::env::temp_dir().join(format!("tp-secret-{}", std::process::id()));
        std::fs::write(&path, "file-secret\n").unwrap();
        let text = minimal().replace("client_secret: s3cr3t", &format!("client_secret_file: {}", path.display()));
        let s = load_text(&text, &[]).unwrap();
        assert_eq!(s.oidc.client_secret, "file-secret");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn short_session_secret_is_rejected() {
        let text = minimal().replace(SECRET, "c2hvcnQ=");
        let err = load_text(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("session.secrets"), "{err}");
    }

    #[test]
    fn redis_settings_are_checked_and_default_sensibly() {
        // No Redis: cookie sessions, revocations in memory.
        let s = load_text(&minimal(), &[]).unwrap();
        assert_eq!((s.session.store, s.session.revocations), (StoreKind::Cookie, RevocationKind::Memory));
        assert_eq!(s.session.revocation_staleness, Duration::from_secs(1));

        // `store: redis` needs a URL; the URL (password inside) may come from a file.
        let err = load_text(&(minimal() + "  store: redis\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("session.store") && err.contains("redis_url"), "{err}");
        let path = std::env::temp_dir().join(format!("tp-redis-url-{}", std::process::id()));
        std::fs::write(&path, "redis://:pa55word@redis:6379/2\n").unwrap();
        let text = minimal() + &format!("  store: redis\n  redis_url_file: {}\n", path.display());
        let s = load_text(&text, &[]).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(s.session.redis_url.as_deref(), Some("redis://:pa55word@redis:6379/2"));
        assert_eq!((s.session.store, s.session.revocations), (StoreKind::Redis, RevocationKind::Redis));
        assert!(!format!("{:?}", s.session).contains("pa55word"));

        // A Redis URL with cookie sessions: revocations go to Redis unless told otherwise.
        let with_url = minimal() + "  redis_url: rediss://:pa55word@cache.example.com:6380\n";
        assert_eq!(load_text(&with_url, &[]).unwrap().session.revocations, RevocationKind::Redis);
        let memory = with_url.clone() + "  revocations: memory\n";
        assert_eq!(load_text(&memory, &[]).unwrap().session.revocations, RevocationKind::Memory);

        // Mistakes, each named; a bad URL is never echoed with its password.
        let cases = [
            (minimal() + "  revocations: redis\n", "session.revocations"),
            (minimal() + "  revocations: valkey\n", "session.revocations"),
            (with_url.clone() + "  store: redis\n  revocations: memory\n", "session.revocations"),
            (with_url.clone() + "  revocation_staleness: 1m\n", "session.revocation_staleness"),
            (minimal() + "  redis_url: http://:pa55word@cache:6379\n", "session.redis_url"),
            (with_url.clone() + "  redis_url_file: /nonexistent\n", "session.redis_url"),
            (minimal() + "  redis_url: redis://:pa55word@cache:6379\n  redis_ca_file: /ca.pem\n", "session.redis_ca_file"),
        ];
        for (text, key) in cases {
            let err = load_text(&text, &[]).unwrap_err().to_string();
            assert!(err.starts_with(key), "{key}: {err}");
            assert!(!err.contains("pa55word"), "{err}");
        }
        // From the environment too.
        let s = load_text(&minimal(), &[("TROUSSEAU_PROXY_SESSION_REDIS_URL", "redis://127.0.0.1:6379"), ("TROUSSEAU_PROXY_SESSION_REVOCATION_STALENESS", "250ms")]).unwrap();
        assert_eq!(s.session.revocation_staleness, Duration::from_millis(250));
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_named_never_quoted() {
        const LEAK: &str = "c3VwZXItc2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw";
        let string_for_list = minimal().replace(&format!("[\"{SECRET}\"]"), &format!("\"{LEAK}\""));
        let number_for_list = minimal().replace(&format!("[\"{SECRET}\"]"), "987654321987");
        let list_for_string = minimal().replace("client_secret: s3cr3t", &format!("client_secret: [{LEAK}]"));
        let tricky = minimal().replace(&format!("[\"{SECRET}\"]"), &format!("\"{LEAK}, expected x at line 3\""));
        for (text, key, leak) in [
            (string_for_list, "session.secrets", LEAK),
            (number_for_list, "session.secrets", "987654321987"),
            (list_for_string, "oidc.client_secret", LEAK),
            (tricky, "session.secrets", LEAK),
        ] {
            let err = load_text(&text, &[]).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("line") && err.contains("redacted"), "{err}");
            assert!(!err.contains(leak) && !err.contains(&leak[..12]), "{err}");
        }
        // From the environment: the variable is named, the value is not.
        for (var, value) in [
            ("TROUSSEAU_PROXY_SESSION_SECRETS", "[1234567.25]"),
            ("TROUSSEAU_PROXY_SESSION_SECRETS", "[{k: 1234567.25}]"),
        ] {
            let err = load_text(&minimal(), &[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var) && err.contains("redacted"), "{err}");
            assert!(!err.contains("1234567"), "{err}");
        }
        let err = load_text(&minimal(), &[("TROUSSEAU_PROXY_SESSION_REDIS_URL", "[1234567.25]")]).unwrap_err().to_string();
        assert!(err.contains("TROUSSEAU_PROXY_SESSION_REDIS_URL") && !err.contains("1234567"), "{err}");
        // Other keys keep their value in the message: it helps, and it is not secret.
        let err = load_text(&minimal(), &[("TROUSSEAU_PROXY_ROUTES_PUBLIC", "[{a: b}]")]).unwrap_err().to_string();
        assert!(err.contains("TROUSSEAU_PROXY_ROUTES_PUBLIC") && err.contains("routes.public"), "{err}");
    }

    #[test]
    fn a_secret_that_looks_like_a_number_stays_as_written() {
        for secret in ["123456789", "0x1F", "1e3", "1_000", "-0"] {
            let s = load_text(&minimal().replace("client_secret: s3cr3t", &format!("client_secret: {secret}")), &[]).unwrap();
            assert_eq!(s.oidc.client_secret, secret);
        }
    }

    #[test]
    fn an_empty_client_secret_is_refused() {
        for text in [minimal().replace("client_secret: s3cr3t", "client_secret: \"\""), minimal().replace("client_secret: s3cr3t", "client_secret: \"  \"")] {
            let err = load_text(&text, &[]).unwrap_err().to_string();
            assert!(err.starts_with("oidc.client_secret (line 6)") && err.contains("empty"), "{err}");
        }
        let err = load_text(&minimal(), &[("TROUSSEAU_PROXY_OIDC_CLIENT_SECRET", "")]).unwrap_err().to_string();
        assert!(err.starts_with("oidc.client_secret (environment variable TROUSSEAU_PROXY_OIDC_CLIENT_SECRET)"), "{err}");
        let path = std::env::temp_dir().join(format!("tp-empty-secret-{}", std::process::id()));
        std::fs::write(&path, "\n").unwrap();
        let text = minimal().replace("client_secret: s3cr3t", &format!("client_secret_file: {}", path.display()));
        let err = load_text(&text, &[]).unwrap_err().to_string();
        let _ = std::fs::remove_file(path);
        assert!(err.starts_with("oidc.client_secret_file (line 6)") && err.contains("empty"), "{err}");
    }

    #[test]
    fn a_bad_value_from_the_environment_or_a_flag_names_it_not_the_file_line() {
        let err = load_text(&minimal(), &[("TROUSSEAU_PROXY_LISTEN", "nonsense")]).unwrap_err().to_string();
        assert!(err.starts_with("listen (environment variable TROUSSEAU_PROXY_LISTEN)"), "{err}");
        let err = load_text(&minimal(), &[("TROUSSEAU_PROXY_UPSTREAM", "ftp://x")]).unwrap_err().to_string();
        assert!(err.starts_with("upstream (environment variable TROUSSEAU_PROXY_UPSTREAM)") && !err.contains("line 2"), "{err}");
        let path = std::env::temp_dir().join(format!("tp-flag-{}", std::process::id()));
        std::fs::write(&path, minimal()).unwrap();
        let flags = Flags { listen: Some("nowhere".into()), upstream: None };
        let err = load(Some(&path), &[("TROUSSEAU_PROXY_LISTEN".into(), "0.0.0.0:1".into())], &flags).unwrap_err().to_string();
        let _ = std::fs::remove_file(path);
        assert!(err.starts_with("listen (flag --listen)"), "{err}");
        // A key of the file still gets its line.
        let err = load_text(&minimal().replace("upstream: http://127.0.0.1:8080", "upstream: ftp://x"), &[("TROUSSEAU_PROXY_LISTEN", "0.0.0.0:1")]).unwrap_err().to_string();
        assert!(err.starts_with("upstream (line 2)"), "{err}");
    }

    #[test]
    fn bearer_check_limits_default_to_ten_and_are_bounded() {
        let s = load_text(&minimal(), &[]).unwrap();
        assert_eq!(s.bearer_limits, BearerLimits { per_second: 10, in_flight: 10 });
        let s = load_text(&(minimal() + "api:\n  introspections_per_second: 50\n"), &[("TROUSSEAU_PROXY_API_INTROSPECTIONS_IN_FLIGHT", "4")]).unwrap();
        assert_eq!(s.bearer_limits, BearerLimits { per_second: 50, in_flight: 4 });
        let err = load_text(&(minimal() + "api:\n  introspections_per_second: 0\n"), &[]).unwrap_err().to_string();
        assert!(err.starts_with("api.introspections_per_second (line 10)"), "{err}");
        let err = load_text(&minimal(), &[("TROUSSEAU_PROXY_API_INTROSPECTIONS_IN_FLIGHT", "0")]).unwrap_err().to_string();
        assert!(err.starts_with("api.introspections_in_flight (environment variable"), "{err}");
        let err = load_text(&minimal(), &[("TROUSSEAU_PROXY_OIDC_JWKS_REFETCH_INTERVAL", "0s")]).unwrap_err().to_string();
        assert!(err.contains("oidc.jwks_refetch_interval"), "{err}");
    }

    #[test]
    fn session_store_bounds_have_safe_defaults_and_named_errors() {
        let s = load_text(&minimal(), &[]).unwrap();
        assert_eq!(s.session.max_sessions_per_user, 10);
        assert_eq!(s.session.memory_store_max_bytes, 256 * 1024 * 1024);
        let s = load_text(&(minimal() + "  max_sessions_per_user: 3\n  memory_store_max_mib: 64\n"), &[]).unwrap();
        assert_eq!((s.session.max_sessions_per_user, s.session.memory_store_max_bytes), (3, 64 * 1024 * 1024));
        let s = load_text(&minimal(), &[("TROUSSEAU_PROXY_SESSION_MAX_SESSIONS_PER_USER", "5"), ("TROUSSEAU_PROXY_SESSION_MEMORY_STORE_MAX_MIB", "32")]).unwrap();
        assert_eq!((s.session.max_sessions_per_user, s.session.memory_store_max_bytes), (5, 32 * 1024 * 1024));
        for (text, key) in [
            (minimal() + "  max_sessions_per_user: 0\n", "session.max_sessions_per_user"),
            (minimal() + "  max_sessions_per_user: 1001\n", "session.max_sessions_per_user"),
            (minimal() + "  memory_store_max_mib: 0\n", "session.memory_store_max_mib"),
        ] {
            let err = load_text(&text, &[]).unwrap_err().to_string();
            assert!(err.starts_with(key), "{key}: {err}");
        }
    }

    #[test]
        fn limits_default_safely_and_every_mistake_names_its_key() {
        let s = load_text(&minimal(), &[]).unwrap();
        assert_eq!(s.limits, crate::limits::LimitSettings::default());
        assert_eq!(s.limits.header_timeout, Duration::from_secs(30));
        assert!(s.limits.idle_timeout <= Duration::from_secs(60) && s.limits.max_requests_per_client > 0);

        let text = minimal() + "limits:\n  max_requests_per_client: 0\n  send_timeout: 2m\nproxy:\n  trust_forwarded_headers: true\n";
        let s = load_text(&text, &[]).unwrap();
        assert_eq!((s.limits.max_requests_per_client, s.limits.send_timeout), (0, Duration::from_secs(120)));
        assert!(s.limits.client_from_forwarded, "behind a trusted proxy, the client is the forwarded address");

        for (line, key) in [
            ("  max_connections: 0", "limits.max_connections (line 10)"),
            ("  max_requests_in_flight: 0", "limits.max_requests_in_flight"),
            ("  http2_max_concurrent_streams: 0", "limits.http2_max_concurrent_streams"),
            ("  header_timeout: 2h", "limits.header_timeout"),
            ("  idle_timeout: 0s", "limits.idle_timeout"),
        ] {
            let err = load_text(&(minimal() + "limits:\n" + line + "\n"), &[]).unwrap_err().to_string();
            assert!(err.starts_with(key), "{line}: {err}");
        }
        let err = load_text(&(minimal() + "limits:\n  max_conections: 5\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("max_conections"), "{err}");

        // Numbers and durations from the environment.
        let s = load_text(
            &minimal(),
            &[("TROUSSEAU_PROXY_LIMITS_MAX_CONNECTIONS", "500"), ("TROUSSEAU_PROXY_LIMITS_IDLE_TIMEOUT", "5m"), ("TROUSSEAU_PROXY_LIMITS_REQUEST_BODY_MIN_RATE", "0")],
        )
        .unwrap();
        assert_eq!((s.limits.max_connections, s.limits.idle_timeout, s.limits.request_body_min_rate), (500, Duration::from_secs(300), 0));
    }

    #[test]
    fn redacted_yaml_hides_secrets() {
        let (file, _) = {
            let path = std::env::temp_dir().join(format!("tp-redact-{}", std::process::id()));
            std::fs::write(&path, minimal()).unwrap();
            let r = load_file_config(Some(&path), &[]).unwrap();
            let _ = std::fs::remove_file(path);
            r
        };
        let out = redacted_yaml(&file);
        assert!(!out.contains("s3cr3t") && !out.contains(SECRET), "{out}");
        assert!(out.contains("<redacted>"));
    }
}
