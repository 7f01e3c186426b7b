//! [`validate`]: every key checked, section by section, into [`Settings`]; an error names the
//! key and, for a value from the file, its line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::*;
use crate::session::redis::{RedisTarget, SentinelTarget};

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

    let tls = tls(file, source)?;
    if tls.is_some() && !secure_cookies {
        return Err(invalid("public_url", format!("`{public_text}` is http, but tls.cert_file makes the proxy serve https: use https://")));
    }
    let http_redirect_listen = match &file.http_redirect_listen {
        None => None,
        Some(_) if tls.is_none() => {
            return Err(invalid("http_redirect_listen", "redirects to https: set tls.cert_file and tls.key_file too".into()));
        }
        Some(t) => {
            let addr: SocketAddr = t.parse().map_err(|_| invalid("http_redirect_listen", format!("`{t}` is not an address like 0.0.0.0:80")))?;
            if addr == listen {
                return Err(invalid("http_redirect_listen", format!("`{t}` is also `listen`: use another port (80)")));
            }
            Some(addr)
        }
    };

    let grpc_authz_listen = match &file.grpc_authz_listen {
        None => None,
        Some(t) => {
            let addr: SocketAddr = t.parse().map_err(|_| invalid("grpc_authz_listen", format!("`{t}` is not an address like 0.0.0.0:9001")))?;
            if addr == listen || Some(addr) == metrics_listen || Some(addr) == http_redirect_listen {
                return Err(invalid("grpc_authz_listen", format!("`{t}` is already another listener's address: use a port of its own (9001)")));
            }
            Some(addr)
        }
    };

    let oidc = oidc(file, source, &public_origin)?;
    let session = session(file, source)?;
    let identity = identity(file, source, &oidc.client_id)?;
    let (bearer_userinfo, bearer_limits) = api(file, source)?;
    routes(file, source)?;
    let cors = cors(file, source)?;
    let limits = validate_limits(&file.limits, file.proxy.trust_forwarded_headers).map_err(|(key, message)| invalid(key, message))?;
    if file.proxy.shutdown_delay.0 > Duration::from_secs(300) {
        return Err(invalid("proxy.shutdown_delay", "must be at most 5m: the time a load balancer takes to stop sending new requests".into()));
    }
    let ratio = file.telemetry.sampling_ratio;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(invalid("telemetry.sampling_ratio", format!("{ratio}: must be between 0 (no new trace sampled) and 1 (all)")));
    }
    if let Some(endpoint) = &file.telemetry.otlp_endpoint {
        crate::trace::otlp::traces_uri(endpoint).map_err(|m| invalid("telemetry.otlp_endpoint", m))?;
    }

    Ok(Settings {
        listen,
        public_url,
        public_origin,
        secure_cookies,
        upstream,
        metrics_listen,
        tls,
        http_redirect_listen,
        grpc_authz_listen,
        proxy: file.proxy.clone(),
        oidc,
        session,
        identity,
        organization: file.organization.clone(),
        routes: file.routes.clone(),
        bearer_userinfo,
        bearer_limits,
        cors,
        limits,
        telemetry: file.telemetry.clone(),
    })
}

/// `tls:`: both files or neither; they load (the certificate fits its key), and so does the
/// client CA file.
fn tls(file: &FileConfig, source: &SourceText) -> Result<Option<TlsSettings>, ConfigError> {
    let invalid = |key: &str, message: String| source.invalid(key, message);
    let t = &file.tls;
    let (cert_file, key_file) = match (&t.cert_file, &t.key_file) {
        (None, None) => {
            if t.client_ca_file.is_some() {
                return Err(invalid("tls.client_ca_file", "needs tls.cert_file and tls.key_file (mutual TLS is on the HTTPS listener)".into()));
            }
            return Ok(None);
        }
        (Some(cert), Some(key)) => (PathBuf::from(cert), PathBuf::from(key)),
        (Some(_), None) => return Err(invalid("tls.key_file", "is required with tls.cert_file".into())),
        (None, Some(_)) => return Err(invalid("tls.cert_file", "is required with tls.key_file".into())),
    };
    if let Err(e) = crate::tls::serving::ReloadingCert::load(&cert_file, &key_file) {
        let key = if matches!(e, crate::tls::serving::CertError::NoKey { .. }) { "tls.key_file" } else { "tls.cert_file" };
        return Err(invalid(key, e.to_string()));
    }
    let client_ca_file = t.client_ca_file.as_ref().map(PathBuf::from);
    if let Some(path) = &client_ca_file {
        crate::tls::client_roots(path).map_err(|e| invalid("tls.client_ca_file", e.to_string()))?;
    }
    Ok(Some(TlsSettings { cert_file, key_file, client_ca_file, hsts_max_age: t.hsts_max_age.0 }))
}

/// `oidc:`. The redirect URI is the public origin's `/.trousseau/callback`.
fn oidc(file: &FileConfig, source: &SourceText, public_origin: &str) -> Result<OidcSettings, ConfigError> {
    let invalid = |key: &str, message: String| source.invalid(key, message);
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
    Ok(OidcSettings {
        issuer,
        client_id: client_id.clone(),
        client_secret,
        scopes,
        redirect_uri,
        post_logout_redirect_uri,
        ca_file: file.oidc.ca_file.as_ref().map(PathBuf::from),
        timeout: file.oidc.timeout.0,
        jwks_refetch_interval,
    })
}

/// `session.secrets` and the lines of `session.secrets_file` (blank lines and `#` comments
/// skipped), each a base64 key of 32 bytes; at least one.
fn secrets(file: &FileConfig, source: &SourceText) -> Result<Vec<Vec<u8>>, ConfigError> {
    let invalid = |key: &str, message: String| source.invalid(key, message);
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
    secret_texts
        .iter()
        .enumerate()
        .map(|(i, s)| {
            crate::session::seal::parse_secret(s)
                .map_err(|e| invalid("session.secrets", format!("secret #{}: {e}", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()
}

/// Where sessions and revocations live (`session.store`, `session.revocations`) and the Redis
/// they may share, checked together: each needs the others to make sense.
fn sharing(file: &FileConfig, source: &SourceText) -> Result<(StoreKind, Option<RedisTarget>, RevocationKind), ConfigError> {
    let invalid = |key: &str, message: String| source.invalid(key, message);
    let store = file.session.store;
    let redis = redis_target(file, source)?;
    if file.session.redis_ca_file.is_some() && !redis.as_ref().is_some_and(RedisTarget::uses_tls) {
        return Err(invalid(
            "session.redis_ca_file",
            "is only used with Redis over TLS: a rediss:// session.redis_url or cluster node, or session.redis_sentinel.tls".into(),
        ));
    }
    const NEEDS_REDIS: &str = "needs Redis: session.redis_url (or session.redis_url_file), session.redis_sentinel or session.redis_cluster";
    if store == StoreKind::Redis && redis.is_none() {
        return Err(invalid("session.store", format!("`redis` {NEEDS_REDIS}")));
    }
    let revocations = match file.session.revocations {
        None if redis.is_some() => RevocationKind::Redis,
        None => RevocationKind::Memory,
        Some(kind) => kind,
    };
    if revocations == RevocationKind::Redis && redis.is_none() {
        return Err(invalid("session.revocations", format!("`redis` {NEEDS_REDIS}")));
    }
    if revocations == RevocationKind::Memory && store == StoreKind::Redis {
        return Err(invalid(
            "session.revocations",
            "`memory` with session.store: redis would end a back-channel-logged-out session on one replica only; \
             remove session.revocations (it defaults to redis) or set it to redis"
                .into(),
        ));
    }
    Ok((store, redis, revocations))
}

/// The one Redis deployment given: `session.redis_url` (or its file), `session.redis_sentinel` or
/// `session.redis_cluster`.
fn redis_target(file: &FileConfig, source: &SourceText) -> Result<Option<RedisTarget>, ConfigError> {
    let invalid = |key: &str, message: String| source.invalid(key, message);
    let session = &file.session;
    let url = secret_value(session.redis_url.as_deref(), session.redis_url_file.as_deref(), "session.redis_url", source)?
        .map(|url| url.trim().to_string());
    let given: Vec<&str> = [
        url.is_some().then_some("session.redis_url"),
        session.redis_sentinel.is_some().then_some("session.redis_sentinel"),
        session.redis_cluster.is_some().then_some("session.redis_cluster"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        return Err(invalid(given[1], format!("set one of session.redis_url, session.redis_sentinel and session.redis_cluster, not {}", given.join(" and "))));
    }
    if let Some(url) = url {
        check_redis_url(&url).map_err(|m| invalid("session.redis_url", m))?;
        return Ok(Some(RedisTarget::Single(url)));
    }
    if let Some(nodes) = &session.redis_cluster {
        if nodes.is_empty() {
            return Err(invalid("session.redis_cluster", "lists no node: give one or more host:port of the cluster".into()));
        }
        let mut first: Option<(bool, String, Option<String>)> = None;
        for node in nodes {
            let url = crate::session::redis::node_url(node).map_err(|m| invalid("session.redis_cluster", m))?;
            ::redis::IntoConnectionInfo::into_connection_info(url.as_str())
                .map_err(|e| invalid("session.redis_cluster", format!("`{}`: {e}", crate::session::redis::redacted_url(&url))))?;
            // redis-rs takes TLS, the user and the password from the first node for every node.
            let parsed = url::Url::parse(&url).map_err(|e| invalid("session.redis_cluster", e.to_string()))?;
            let this = (parsed.scheme().ends_with('s'), parsed.username().to_string(), parsed.password().map(String::from));
            match &first {
                None => first = Some(this),
                Some(first) if *first != this => {
                    return Err(invalid(
                        "session.redis_cluster",
                        "every node must use the same scheme (redis:// or rediss://), user and password: they are one cluster's".into(),
                    ));
                }
                Some(_) => {}
            }
        }
        return Ok(Some(RedisTarget::Cluster(nodes.clone())));
    }
    let Some(sentinel) = &session.redis_sentinel else { return Ok(None) };
    let key = "session.redis_sentinel";
    if sentinel.master_name.trim().is_empty() || sentinel.master_name.chars().any(char::is_whitespace) {
        return Err(invalid(&format!("{key}.master_name"), "must be the group's name as the sentinels know it (`sentinel monitor <name> …`)".into()));
    }
    if sentinel.sentinels.is_empty() {
        return Err(invalid(&format!("{key}.sentinels"), "lists no sentinel: give their host:port (three or more)".into()));
    }
    let sentinels = sentinel
        .sentinels
        .iter()
        .map(|s| {
            let (host, port) = s.rsplit_once(':').filter(|(h, _)| !h.is_empty()).ok_or(())?;
            Ok((host.trim_matches(['[', ']']).to_string(), port.parse::<u16>().map_err(|_| ())?))
        })
        .collect::<Result<Vec<_>, ()>>()
        .map_err(|()| invalid(&format!("{key}.sentinels"), "each sentinel is host:port, like 10.0.0.5:26379".into()))?;
    let password = |name: &str, path: &Option<String>| -> Result<Option<String>, ConfigError> {
        let Some(path) = path else { return Ok(None) };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(&format!("{key}.{name}"), format!("cannot read `{path}`: {e}")))?;
        Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
    };
    Ok(Some(RedisTarget::Sentinel(SentinelTarget {
        master_name: sentinel.master_name.clone(),
        sentinels,
        password: password("password_file", &sentinel.password_file)?,
        sentinel_password: password("sentinel_password_file", &sentinel.sentinel_password_file)?,
        tls: sentinel.tls,
    })))
}

/// `session:`: the secrets (inline and from `secrets_file`), the cookie, the store, Redis and the
/// revocations, and the bounds of each.
fn session(file: &FileConfig, source: &SourceText) -> Result<SessionSettings, ConfigError> {
    let invalid = |key: &str, message: String| source.invalid(key, message);
    let secrets = secrets(file, source)?;
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
    let (store, redis, revocations) = sharing(file, source)?;
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
    Ok(SessionSettings {
        secrets,
        cookie_name,
        max_lifetime,
        store,
        redis,
        redis_ca_file: file.session.redis_ca_file.as_ref().map(PathBuf::from),
        revocations,
        revocation_staleness,
        refresh_skew: file.session.refresh_skew.0,
        refresh_grace: file.session.refresh_grace.0,
        max_sessions_per_user,
        memory_store_max_bytes: u64::from(memory_store_max_mib) * 1024 * 1024,
        end_open_connections: file.session.end_open_connections,
    })
}

/// `identity:`: the signing keys, the assertion, the extra headers. The assertion's audience
/// defaults to the client id.
fn identity(file: &FileConfig, source: &SourceText, client_id: &str) -> Result<IdentitySettings, ConfigError> {
    let invalid = |key: &str, message: String| source.invalid(key, message);
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
    let extra_headers = crate::identity::ExtraHeaders::new(file.identity.headers_preset, &file.identity.headers)
        .map_err(|(key, message)| invalid(key, message))?;
    Ok(IdentitySettings {
        signing_keys_pem,
        audience: file.identity.audience.clone().unwrap_or_else(|| client_id.to_string()),
        assertion_ttl: ttl,
        pass_access_token: file.identity.pass_access_token,
        extra_headers,
    })
}

/// `api:`: whether bearer tokens are accepted, and how many new ones may be checked.
fn api(file: &FileConfig, source: &SourceText) -> Result<(bool, BearerLimits), ConfigError> {
    let invalid = |key: &str, message: String| source.invalid(key, message);
    let bearer_userinfo = file.api.bearer == Bearer::Userinfo;
    let bearer_limits = BearerLimits { per_second: file.api.introspections_per_second, in_flight: file.api.introspections_in_flight };
    if !(1..=10_000).contains(&bearer_limits.per_second) {
        return Err(invalid("api.introspections_per_second", "must be between 1 and 10000 (default 10)".into()));
    }
    if !(1..=1_000).contains(&bearer_limits.in_flight) {
        return Err(invalid("api.introspections_in_flight", "must be between 1 and 1000 (default 10)".into()));
    }
    Ok((bearer_userinfo, bearer_limits))
}

/// `routes:`: every path starts with `/` (the rules themselves compile in [`crate::policy`]).
fn routes(file: &FileConfig, source: &SourceText) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| source.invalid(key, message);
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
    Ok(())
}

/// `cors:`: exact origins, as browsers write them in `Origin`.
fn cors(file: &FileConfig, source: &SourceText) -> Result<CorsSettings, ConfigError> {
    let invalid = |key: &str, message: String| source.invalid(key, message);
    let mut allowed_origins = Vec::new();
    for (i, text) in file.cors.allowed_origins.iter().enumerate() {
        let url = parse_http_url(text).map_err(|m| invalid("cors.allowed_origins", format!("entry #{}: {m}", i + 1)))?;
        if url.query().is_some() || url.fragment().is_some() || url.path() != "/" {
            return Err(invalid(
                "cors.allowed_origins",
                format!("entry #{}: `{text}` must be an origin only (scheme, host, port), like https://spa.example.com", i + 1),
            ));
        }
        allowed_origins.push(url.origin().ascii_serialization());
    }
    let preflight_pass = file.cors.preflight == Preflight::Pass;
    Ok(CorsSettings { allowed_origins, preflight_pass })
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
