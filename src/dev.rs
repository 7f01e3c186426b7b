//! `trousseau-proxy dev`: the proxy, the embedded Trousseau twin and (without `--upstream`) a demo
//! app, wired together on one port with generated secrets and keys. For development only.
//!
//! The demo app is a real upstream on a loopback port: it receives exactly what any app behind
//! the proxy receives, and shows the identity headers and the assertion, verified against
//! `/.trousseau/jwks.json` the way an app would verify it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::body::{self, Body};
use crate::config::{self, FileConfig, HumanDuration, SourceText};
use crate::devidp::{DevIdp, DevIdpConfig, DevUser};
use crate::pages::{self, escape, Lang};

/// Flags of `trousseau-proxy dev`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct DevArgs {
    /// The app to protect, e.g. http://localhost:3000. Without it, a built-in demo app answers.
    #[arg(long)]
    pub upstream: Option<String>,
    /// Where to listen (loopback only unless --allow-remote). Default 127.0.0.1:4180, or
    /// 127.0.0.1:4181 with --idp-only.
    #[arg(long)]
    pub listen: Option<String>,
    /// YAML list of extra demo users (claims, organizations, roles).
    #[arg(long)]
    pub users: Option<PathBuf>,
    /// Allow a non-loopback --listen address (the dev IdP lets anyone sign in as anyone).
    #[arg(long)]
    pub allow_remote: bool,
    /// Access-token lifetime at the dev IdP (short values let you watch refreshes).
    #[arg(long, default_value = "5m")]
    pub access_token_ttl: String,
    /// Run only the dev IdP (on 127.0.0.1:4181) and the demo app (on 127.0.0.1:4182), for
    /// `trousseau-proxy --config config.example.yaml` beside them.
    #[arg(long)]
    pub idp_only: bool,
}

/// Fixed dev-mode client credentials, also used by `config.example.yaml`.
pub const DEV_CLIENT_ID: &str = "trousseau-proxy-dev";
/// Dev-mode client secret (the dev IdP is local and for development only).
pub const DEV_CLIENT_SECRET: &str = "dev-only-client-secret-not-for-production";
/// The dev IdP's application slug.
pub const DEV_SLUG: &str = "dev";
/// Where the dev IdP lives under the proxy.
pub const DEV_IDP_PATH: &str = "/.trousseau/dev-idp";

/// Runs dev mode until SIGTERM/SIGINT.
pub async fn run(args: DevArgs) -> Result<(), String> {
    let listen_text = args.listen.clone().unwrap_or_else(|| if args.idp_only { "127.0.0.1:4181" } else { "127.0.0.1:4180" }.into());
    let listen: SocketAddr = listen_text.parse().map_err(|_| format!("--listen `{listen_text}` is not an address like 127.0.0.1:4180"))?;
    if !listen.ip().is_loopback() && !args.allow_remote {
        return Err(format!(
            "--listen {listen} is not a loopback address. The dev IdP lets anyone sign in as any demo user; \
             add --allow-remote if you really want that on your network."
        ));
    }
    let access_ttl = HumanDuration::parse(&args.access_token_ttl).map_err(|e| format!("--access-token-ttl: {e}"))?.0;
    let host = if listen.ip().is_unspecified() { format!("127.0.0.1:{}", listen.port()) } else { listen.to_string() };
    let public_origin = format!("http://{host}");

    let mut users = crate::devidp::default_users();
    if let Some(path) = &args.users {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--users {}: {e}", path.display()))?;
        let extra: Vec<DevUser> = serde_yaml::from_str(&text).map_err(|e| format!("--users {}: {e}", path.display()))?;
        users.extend(extra);
    }

    if args.idp_only {
        return run_idp_only(listen, &public_origin, users, access_ttl).await;
    }

    let idp_config = DevIdpConfig {
        base_url: url::Url::parse(&format!("{public_origin}{DEV_IDP_PATH}")).map_err(|e| e.to_string())?,
        slug: DEV_SLUG.into(),
        client_id: DEV_CLIENT_ID.into(),
        client_secret: DEV_CLIENT_SECRET.into(),
        redirect_uris: vec![format!("{public_origin}/.trousseau/callback")],
        post_logout_redirect_uris: vec![format!("{public_origin}/")],
        backchannel_logout_uri: Some(format!("{public_origin}/.trousseau/backchannel-logout")),
        access_token_ttl: access_ttl,
        id_token_ttl: access_ttl,
        users,
        ..DevIdpConfig::default()
    };
    let idp = DevIdp::new(idp_config).map_err(|e| e.to_string())?;

    let upstream = match &args.upstream {
        Some(u) => u.clone(),
        None => {
            let addr = start_demo_app(public_origin.clone()).await.map_err(|e| format!("demo app: {e}"))?;
            format!("http://{addr}")
        }
    };
    let settings = dev_settings(&listen.to_string(), &public_origin, &upstream, &idp.issuer())?;

    print_banner(&public_origin, args.upstream.as_deref());
    crate::server::run(settings, Some(idp)).await.map_err(|e| e.to_string())
}

/// The settings of dev mode, validated like any configuration.
pub fn dev_settings(listen: &str, public_origin: &str, upstream: &str, issuer: &str) -> Result<config::Settings, String> {
    let mut file = FileConfig {
        listen: Some(listen.into()),
        public_url: Some(public_origin.into()),
        upstream: Some(upstream.into()),
        ..FileConfig::default()
    };
    file.oidc.issuer = Some(issuer.into());
    file.oidc.client_id = Some(DEV_CLIENT_ID.into());
    file.oidc.client_secret = Some(DEV_CLIENT_SECRET.into());
    file.oidc.scopes = ["openid", "email", "profile", "trousseau:context", "trousseau:organization"].map(String::from).to_vec();
    file.session.secrets = vec![crate::session::seal::generate_secret()];
    config::validate(&file, &SourceText { name: "dev mode".into(), text: String::new() }).map_err(|e| e.to_string())
}

async fn run_idp_only(listen: SocketAddr, public_origin: &str, users: Vec<DevUser>, access_ttl: Duration) -> Result<(), String> {
    let config = DevIdpConfig {
        base_url: url::Url::parse(public_origin).map_err(|e| e.to_string())?,
        slug: DEV_SLUG.into(),
        client_id: DEV_CLIENT_ID.into(),
        client_secret: DEV_CLIENT_SECRET.into(),
        redirect_uris: vec!["http://127.0.0.1:4180/.trousseau/callback".into(), "http://localhost:4180/.trousseau/callback".into()],
        post_logout_redirect_uris: vec!["http://127.0.0.1:4180/".into(), "http://localhost:4180/".into()],
        backchannel_logout_uri: Some("http://127.0.0.1:4180/.trousseau/backchannel-logout".into()),
        access_token_ttl: access_ttl,
        id_token_ttl: access_ttl,
        users,
        ..DevIdpConfig::default()
    };
    let idp = DevIdp::new(config).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let demo = start_demo_app_on("127.0.0.1:4182", "http://127.0.0.1:4180".into()).await.map_err(|e| format!("demo app on 127.0.0.1:4182: {e}"))?;
    eprintln!(
        "\n  Trousseau dev IdP — DEVELOPMENT ONLY — at {public_origin}\n  issuer:        {}\n  client_id:     {DEV_CLIENT_ID}\n  client_secret: {DEV_CLIENT_SECRET}\n  demo app:      http://{demo}\n\n  Now run: trousseau-proxy --config config.example.yaml  and open http://127.0.0.1:4180/\n",
        idp.issuer()
    );
    tokio::select! {
        _ = crate::devidp::serve(listener, idp) => {},
        _ = crate::server::shutdown_signal() => {},
    }
    Ok(())
}

fn print_banner(public_origin: &str, upstream: Option<&str>) {
    let app = upstream.map(|u| format!("your app at {u}")).unwrap_or_else(|| "the built-in demo app".into());
    eprintln!(
        "\n  trousseau-proxy dev — DEVELOPMENT ONLY: the embedded IdP lets anyone sign in as a demo user.\n\n  \
         Open {public_origin}/ in your browser: sign in as a demo user, then you reach {app}\n  \
         with the identity headers and a signed X-Trousseau-Jwt-Assertion.\n\n  \
         Dev IdP issuer: {public_origin}{DEV_IDP_PATH}/application/o/{DEV_SLUG}/\n  \
         Sign out:       {public_origin}/.trousseau/logout\n"
    );
}

/// Starts the demo app on a loopback port and returns its address.
pub async fn start_demo_app(public_origin: String) -> std::io::Result<SocketAddr> {
    start_demo_app_on("127.0.0.1:0", public_origin).await
}

/// Starts the demo app on `listen`; it verifies assertions with `{public_origin}/.trousseau/jwks.json`.
pub async fn start_demo_app_on(listen: &str, public_origin: String) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let verifier = Arc::new(JwksVerifier::new(format!("{public_origin}/.trousseau/jwks.json")));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let verifier = verifier.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let verifier = verifier.clone();
                    async move { Ok::<_, std::convert::Infallible>(demo_page(req, &verifier).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Fetches the proxy's JWKS like an app would, and verifies ES256 assertions with it.
pub struct JwksVerifier {
    url: String,
    keys: tokio::sync::RwLock<Vec<(String, Vec<u8>)>>,
}

impl JwksVerifier {
    /// A verifier for the JWKS at `url`.
    pub fn new(url: String) -> JwksVerifier {
        JwksVerifier { url, keys: tokio::sync::RwLock::new(Vec::new()) }
    }

    async fn fetch(&self) -> Result<(), String> {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri: http::Uri = self.url.parse().map_err(|e| format!("{e}"))?;
        let resp = client.get(uri).await.map_err(|e| e.to_string())?;
        let bytes = Limited::new(resp.into_body(), 64 * 1024).collect().await.map_err(|e| e.to_string())?.to_bytes();
        let jwks: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut keys = Vec::new();
        for k in jwks["keys"].as_array().into_iter().flatten() {
            let (Some(kid), Some(x), Some(y)) = (k["kid"].as_str(), k["x"].as_str(), k["y"].as_str()) else { continue };
            let (Ok(x), Ok(y)) = (b64.decode(x), b64.decode(y)) else { continue };
            let mut point = vec![4u8];
            point.extend(x);
            point.extend(y);
            keys.push((kid.to_string(), point));
        }
        *self.keys.write().await = keys;
        Ok(())
    }

    /// Verifies a compact ES256 JWS and returns its header and claims.
    pub async fn verify(&self, jws: &str) -> Result<(serde_json::Value, serde_json::Value), String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts = jws.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err("not a compact JWS".into());
        };
        let header: serde_json::Value = serde_json::from_slice(&b64.decode(h).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        if header["alg"] != "ES256" {
            return Err("alg is not ES256".into());
        }
        let kid = header["kid"].as_str().unwrap_or_default().to_string();
        let sig = b64.decode(s).map_err(|e| e.to_string())?;
        let signed = format!("{h}.{p}");
        for attempt in 0..2 {
            let key = self.keys.read().await.iter().find(|(k, _)| *k == kid).map(|(_, v)| v.clone());
            match key {
                Some(point) => {
                    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED, point)
                        .verify(signed.as_bytes(), &sig)
                        .map_err(|_| "signature does not verify".to_string())?;
                    let claims: serde_json::Value =
                        serde_json::from_slice(&b64.decode(p).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
                    return Ok((header, claims));
                }
                None if attempt == 0 => self.fetch().await?,
                None => {}
            }
        }
        Err(format!("no key `{kid}` in {}", self.url))
    }
}

async fn demo_page<B>(req: Request<B>, verifier: &JwksVerifier) -> Response<Body> {
    let h = req.headers();
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let lang = Lang::from_locale(get("x-trousseau-locale").as_deref());
    let mut rows = String::new();
    let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).filter(|k| k.starts_with("x-trousseau-") || k.starts_with("x-forwarded-")).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let value = get(name).unwrap_or_default();
        let shown = if name == "x-trousseau-jwt-assertion" { format!("{}…", value.chars().take(48).collect::<String>()) } else { value };
        rows.push_str(&format!("<tr><th scope=\"row\" class=\"code\">{}</th><td class=\"code\">{}</td></tr>", escape(name), escape(&shown)));
    }
    let cookie_seen = get("cookie").is_some_and(|c| c.contains("trousseau_session"));
    let (assertion_html, verified) = match get("x-trousseau-jwt-assertion") {
        None => (format!("<p class=\"status\">{}</p>", escape(lang.pick("No assertion received.", "Aucune assertion reçue."))), false),
        Some(jws) => match verifier.verify(&jws).await {
            Ok((header, claims)) => (
                format!(
                    "<p class=\"ok\">✔ {}</p><pre>{}</pre><pre>{}</pre>",
                    escape(lang.pick("Signature verified against /.trousseau/jwks.json.", "Signature vérifiée avec /.trousseau/jwks.json.")),
                    escape(&serde_json::to_string_pretty(&header).unwrap_or_default()),
                    escape(&serde_json::to_string_pretty(&claims).unwrap_or_default())
                ),
                true,
            ),
            Err(e) => (format!("<p class=\"status\">✘ {}</p>", escape(&e)), false),
        },
    };
    let name = get("x-trousseau-name").or_else(|| get("x-trousseau-email")).map(|n| percent_decode(&n));
    let title = match (&name, lang) {
        (Some(n), Lang::En) => format!("Hello, {n}"),
        (Some(n), Lang::Fr) => format!("Bonjour, {n}"),
        (None, _) => lang.pick("Demo app", "Application de démonstration").to_string(),
    };
    let org_line = match get("x-trousseau-org-name") {
        Some(org) => format!(
            "<p>{} <strong>{}</strong> <span class=\"badge\">{}</span> · <a href=\"/.trousseau/organizations?rd=/\">{}</a></p>",
            escape(lang.pick("Organization:", "Organisation :")),
            escape(&percent_decode(&org)),
            escape(&get("x-trousseau-org-role").unwrap_or_default()),
            escape(lang.pick("switch", "changer"))
        ),
        None => String::new(),
    };
    let main = format!(
        "<h1>{title}</h1>\n<p class=\"muted\">{intro}</p>\n{org_line}\
         <h2>{h_headers}</h2>\n<table>{rows}</table>\n<p class=\"muted\">{cookie_note}</p>\
         <h2>{h_assertion}</h2>\n{assertion_html}\n\
         <div class=\"actions\"><a class=\"button secondary\" href=\"/.trousseau/userinfo\">/.trousseau/userinfo</a>\
         <form method=\"post\" action=\"/.trousseau/logout\"><button type=\"submit\">{signout}</button></form></div>",
        title = escape(&title),
        intro = escape(lang.pick(
            "This page is the built-in demo app behind trousseau-proxy. It shows what any app behind the proxy receives for this request.",
            "Cette page est l'application de démonstration derrière trousseau-proxy. Elle montre ce que toute application derrière le proxy reçoit pour cette requête.",
        )),
        h_headers = escape(lang.pick("Headers received", "En-têtes reçus")),
        cookie_note = escape(if cookie_seen {
            lang.pick("Warning: a session cookie reached the app!", "Attention : un cookie de session a atteint l'application !")
        } else {
            lang.pick("The session cookie never reaches the app.", "Le cookie de session n'atteint jamais l'application.")
        }),
        h_assertion = escape(lang.pick("Signed assertion (X-Trousseau-Jwt-Assertion)", "Assertion signée (X-Trousseau-Jwt-Assertion)")),
        signout = escape(lang.pick("Sign out", "Se déconnecter")),
    );
    let mut r = Response::new(body::full(pages::layout(lang, &title, &main)));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert("x-demo-assertion-verified", HeaderValue::from_static(if verified { "true" } else { "false" }));
    r
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}
