//! The configuration's unit tests.

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
    assert_eq!(s.session.redis, Some(crate::session::redis::RedisTarget::Single("redis://:pa55word@redis:6379/2".into())));
    assert_eq!((s.session.store, s.session.revocations), (StoreKind::Redis, RevocationKind::Redis));
    assert!(!format!("{:?}", s.session).contains("pa55word"));

    // A Redis URL with cookie sessions: revocations go to Redis unless told otherwise.
    let with_url = minimal() + "  redis_url: rediss://:pa55word@cache.example.com:6380\n";
    assert_eq!(load_text(&with_url, &[]).unwrap().session.revocations, RevocationKind::Redis);
    let memory = with_url.clone() + "  revocations: memory\n";
    assert_eq!(load_text(&memory, &[]).unwrap().session.revocations, RevocationKind::Memory);

    // Sentinel and Cluster instead of one URL, each with what it needs.
    use crate::session::redis::{RedisTarget, SentinelTarget};
    let password = std::env::temp_dir().join(format!("tp-redis-password-{}", std::process::id()));
    std::fs::write(&password, "pa55word\n").unwrap();
    let text = minimal()
        + &format!(
            "  store: redis\n  redis_sentinel:\n    master_name: main\n    sentinels: [10.0.0.5:26379, '[::1]:26380']\n    password_file: {}\n    tls: true\n",
            password.display()
        );
    let s = load_text(&text, &[]).unwrap();
    let _ = std::fs::remove_file(&password);
    assert_eq!(
        s.session.redis,
        Some(RedisTarget::Sentinel(SentinelTarget {
            master_name: "main".into(),
            sentinels: vec![("10.0.0.5".into(), 26379), ("::1".into(), 26380)],
            password: Some("pa55word".into()),
            sentinel_password: None,
            tls: true,
        }))
    );
    assert_eq!(s.session.revocations, RevocationKind::Redis);
    assert!(!format!("{:?}", s.session).contains("pa55word"));
    let text = minimal() + "  redis_cluster: ['rediss://:pa55word@10.0.0.1:7000', 'rediss://:pa55word@10.0.0.2:7001']\n";
    let s = load_text(&text, &[]).unwrap();
    assert!(matches!(&s.session.redis, Some(RedisTarget::Cluster(nodes)) if nodes.len() == 2));
    assert!(!format!("{:?}", s.session).contains("pa55word"));
    // From the environment (a Secret): the nodes comma-separated, Sentinel's mapping as YAML.
    let s = load_text(&minimal(), &[("TROUSSEAU_PROXY_SESSION_REDIS_CLUSTER", "rediss://:pa55word@a:7000,rediss://:pa55word@b:7001")]).unwrap();
    assert_eq!(s.session.redis, Some(RedisTarget::Cluster(vec!["rediss://:pa55word@a:7000".into(), "rediss://:pa55word@b:7001".into()])));
    let s = load_text(&minimal(), &[("TROUSSEAU_PROXY_SESSION_REDIS_SENTINEL", "{master_name: main, sentinels: [s1:26379, s2:26379]}")]).unwrap();
    assert!(matches!(&s.session.redis, Some(RedisTarget::Sentinel(t)) if t.sentinels.len() == 2 && t.master_name == "main"));

    // Mistakes, each named; a bad URL is never echoed with its password.
    let cases = [
        (minimal() + "  revocations: redis\n", "session.revocations"),
        (minimal() + "  revocations: valkey\n", "session.revocations"),
        (with_url.clone() + "  store: redis\n  revocations: memory\n", "session.revocations"),
        (with_url.clone() + "  revocation_staleness: 1m\n", "session.revocation_staleness"),
        (minimal() + "  redis_url: http://:pa55word@cache:6379\n", "session.redis_url"),
        (with_url.clone() + "  redis_url_file: /nonexistent\n", "session.redis_url"),
        (minimal() + "  redis_url: redis://:pa55word@cache:6379\n  redis_ca_file: /ca.pem\n", "session.redis_ca_file"),
        (with_url.clone() + "  redis_cluster: [a:7000]\n", "session.redis_cluster"),
        (minimal() + "  redis_cluster: []\n", "session.redis_cluster"),
        (minimal() + "  redis_cluster: ['http://:pa55word@a:7000']\n", "session.redis_cluster"),
        // One cluster, one way in: redis-rs would use the first node's TLS and password for all.
        (minimal() + "  redis_cluster: [a:7000, 'redis://:pa55word@b:7001']\n", "session.redis_cluster"),
        (minimal() + "  redis_cluster: ['rediss://:pa55word@a:7000', b:7001]\n", "session.redis_cluster"),
        (minimal() + "  redis_cluster: [a:7000]\n  redis_sentinel: {master_name: m, sentinels: [s:26379]}\n", "session.redis_cluster"),
        (minimal() + "  redis_sentinel: {sentinels: [s:26379]}\n", "session.redis_sentinel"),
        (minimal() + "  redis_sentinel: {master_name: m, sentinels: []}\n", "session.redis_sentinel.sentinels"),
        (minimal() + "  redis_sentinel: {master_name: m, sentinels: [s]}\n", "session.redis_sentinel.sentinels"),
        (minimal() + "  redis_sentinel: {master_name: '', sentinels: [s:1]}\n", "session.redis_sentinel.master_name"),
        (minimal() + "  redis_sentinel: {master_name: m, sentinels: [s:1], password_file: /nonexistent}\n", "session.redis_sentinel.password_file"),
        (minimal() + "  redis_sentinel: {master_name: m, sentinels: [s:1], pasword_file: /x}\n", "session.redis_sentinel"),
        (minimal() + "  redis_sentinel: {master_name: m, sentinels: [s:1]}\n  redis_ca_file: /ca.pem\n", "session.redis_ca_file"),
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

#[test]
fn cors_origins_are_exact_origins_and_every_mistake_names_its_key() {
    let s = load_text(&minimal(), &[]).unwrap();
    assert_eq!(s.cors, CorsSettings::default(), "none allowed, preflights judged like any request");
    let s = load_text(&(minimal() + "cors:\n  allowed_origins: [\"https://SPA.example.com:443/\", \"http://localhost:5173\"]\n  preflight: pass\n"), &[]).unwrap();
    assert_eq!(s.cors.allowed_origins, ["https://spa.example.com", "http://localhost:5173"], "as browsers write Origin");
    assert!(s.cors.preflight_pass);
    let s = load_text(&minimal(), &[("TROUSSEAU_PROXY_CORS_ALLOWED_ORIGINS", "https://a.example, https://b.example")]).unwrap();
    assert_eq!(s.cors.allowed_origins, ["https://a.example", "https://b.example"]);
    for (text, key) in [
        ("cors:\n  allowed_origins: [\"https://spa.example.com/app\"]\n", "cors.allowed_origins"),
        ("cors:\n  allowed_origins: [\"spa.example.com\"]\n", "cors.allowed_origins"),
        ("cors:\n  allowed_origins: [\"https://spa.example.com?x=1\"]\n", "cors.allowed_origins"),
        ("cors:\n  preflight: allow\n", "cors.preflight"),
        ("routes:\n  rules:\n    - path: /api/*\n      cors_preflight: always\n", "routes.rules"),
    ] {
        let err = load_text(&(minimal() + text), &[]).unwrap_err().to_string();
        assert!(err.starts_with(key), "{text}: {err}");
    }
}

#[test]
fn tls_needs_both_files_that_load_an_https_public_url_and_names_every_mistake() {
    let dir = std::env::temp_dir().join(format!("tp-config-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let cert = rcgen::generate_simple_self_signed(vec!["app.example.com".to_string()]).unwrap();
    let (cert_file, key_file) = (write("tls.crt", &cert.cert.pem()), write("tls.key", &cert.signing_key.serialize_pem()));
    let other = rcgen::generate_simple_self_signed(vec!["other.example.com".to_string()]).unwrap();
    let other_key = write("other.key", &other.signing_key.serialize_pem());
    let garbage = write("garbage.pem", "not a certificate\n");

    let s = load_text(&minimal(), &[]).unwrap();
    assert_eq!((s.tls, s.http_redirect_listen), (None, None), "plain http by default");
    let with = |extra: &str| minimal() + extra;
    let s = load_text(&with(&format!("http_redirect_listen: 0.0.0.0:8080\ntls:\n  cert_file: {cert_file}\n  key_file: {key_file}\n")), &[]).unwrap();
    let tls = s.tls.expect("tls");
    assert_eq!(tls.hsts_max_age, Duration::from_secs(365 * 86_400), "HSTS on by default");
    assert_eq!(s.http_redirect_listen, Some("0.0.0.0:8080".parse().unwrap()));
    let s = load_text(&with(&format!("tls:\n  cert_file: {cert_file}\n  key_file: {key_file}\n  hsts_max_age: 0s\n  client_ca_file: {cert_file}\n")), &[]).unwrap();
    assert!(s.tls.as_ref().unwrap().hsts_max_age.is_zero() && s.tls.unwrap().client_ca_file.is_some());
    let s = load_text(&minimal(), &[("TROUSSEAU_PROXY_TLS_CERT_FILE", &cert_file), ("TROUSSEAU_PROXY_TLS_KEY_FILE", &key_file)]).unwrap();
    assert!(s.tls.is_some(), "from the environment too");

    for (text, key) in [
        (format!("tls:\n  cert_file: {cert_file}\n"), "tls.key_file"),
        (format!("tls:\n  key_file: {key_file}\n"), "tls.cert_file"),
        (format!("tls:\n  cert_file: {garbage}\n  key_file: {key_file}\n"), "tls.cert_file"),
        (format!("tls:\n  cert_file: {cert_file}\n  key_file: {garbage}\n"), "tls.key_file"),
        (format!("tls:\n  cert_file: {cert_file}\n  key_file: {other_key}\n"), "tls.cert_file"),
        (format!("tls:\n  cert_file: {cert_file}\n  key_file: {key_file}\n  client_ca_file: {garbage}\n"), "tls.client_ca_file"),
        (format!("tls:\n  client_ca_file: {cert_file}\n"), "tls.client_ca_file"),
        ("http_redirect_listen: 0.0.0.0:80\n".to_string(), "http_redirect_listen"),
        (format!("http_redirect_listen: nowhere\ntls:\n  cert_file: {cert_file}\n  key_file: {key_file}\n"), "http_redirect_listen"),
        (format!("listen: 0.0.0.0:443\nhttp_redirect_listen: 0.0.0.0:443\ntls:\n  cert_file: {cert_file}\n  key_file: {key_file}\n"), "http_redirect_listen"),
    ] {
        let err = load_text(&with(&text), &[]).unwrap_err().to_string();
        assert!(err.starts_with(key), "{text}: {err}");
    }
    let http = minimal().replace("https://app.example.com", "http://app.example.com") + &format!("tls:\n  cert_file: {cert_file}\n  key_file: {key_file}\n");
    let err = load_text(&http, &[]).unwrap_err().to_string();
    assert!(err.starts_with("public_url") && err.contains("https://"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_key_is_in_the_readme_reference_and_the_example() {
    // The keys come from the structure (`keys::keys`); a field added without its documentation
    // fails here. README writes a `_file` twin beside its key (`session.redis_url` / `_file`).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("config.example.yaml")).unwrap();
    let (paths, _) = super::key_paths();
    assert!(paths.len() > 60 && paths.contains(&"session.store") && paths.contains(&"limits.send_timeout"), "{paths:?}");
    for path in paths {
        let twin = path.strip_suffix("_file").map(|key| format!("`{key}` / `_file`"));
        assert!(readme.contains(&format!("`{path}`")) || twin.is_some_and(|t| readme.contains(&t)), "README does not name `{path}`");
        let name = path.rsplit('.').next().unwrap();
        assert!(example.contains(&format!("{name}:")), "config.example.yaml does not show `{path}`");
    }
}

#[test]
fn a_value_outside_an_enumeration_names_its_key_its_line_and_the_accepted_ones() {
    // minimal() ends in the session section.
    let text = minimal() + "  store: bogus\n";
    let line = text.lines().count();
    let err = load_text(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with(&format!("session.store (line {line}): unknown variant `bogus`")), "{err}");
    assert!(err.contains("`cookie`, `memory`, `redis`"), "{err}");
    // A line separator the YAML parser counts as a break (pasted into a comment) moves no line.
    let text = minimal().replacen('\n', " # pasted\u{2028}\n", 1) + "  store: bogus\n";
    let err = load_text(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with(&format!("session.store (line {line})")), "{err}");
    // An empty preset is ours, as it always was.
    let s = load_text(&(minimal() + "identity:\n  headers_preset: \"\"\n"), &[]).unwrap();
    assert!(s.identity.extra_headers.is_empty(), "{:?}", s.identity.extra_headers);
}

#[test]
fn the_grpc_authz_listener_is_an_address_of_its_own() {
    assert_eq!(load_text(&minimal(), &[]).unwrap().grpc_authz_listen, None, "off by default");
    let s = load_text(&(minimal() + "grpc_authz_listen: 0.0.0.0:9001\n"), &[]).unwrap();
    assert_eq!(s.grpc_authz_listen, Some("0.0.0.0:9001".parse().unwrap()));
    let s = load_text(&minimal(), &[("TROUSSEAU_PROXY_GRPC_AUTHZ_LISTEN", "127.0.0.1:9001")]).unwrap();
    assert_eq!(s.grpc_authz_listen, Some("127.0.0.1:9001".parse().unwrap()), "from the environment too");
    for text in ["grpc_authz_listen: nowhere\n", "listen: 0.0.0.0:4180\ngrpc_authz_listen: 0.0.0.0:4180\n", "metrics_listen: 127.0.0.1:9180\ngrpc_authz_listen: 127.0.0.1:9180\n"] {
        let err = load_text(&(minimal() + text), &[]).unwrap_err().to_string();
        assert!(err.starts_with("grpc_authz_listen"), "{text}: {err}");
    }
}
