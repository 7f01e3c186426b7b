//! `trousseau-proxy dev`: the proxy, the embedded Trousseau twin and (without `--upstream`) a demo
//! app, wired together on one port with generated secrets and keys. For development only.
//!
//! The demo app is a real upstream on a loopback port: it receives exactly what any app behind
//! the proxy receives, and shows the identity headers and the assertion, verified against
//! `/.trousseau/jwks.json` the way an app would verify it. Its `/live` page keeps a websocket
//! open through the proxy, to watch it close when the session ends (`dev/live.rs`).

mod live;

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
        id_token_ttl: id_token_ttl(access_ttl),
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
    let prefix = idp.path_prefix().to_string();
    let front = crate::server::Front::new(prefix, move |req| {
        let idp = Arc::clone(&idp);
        Box::pin(async move { idp.handle(req).await })
    });
    crate::server::run(settings, None, Some(front)).await.map_err(|e| e.to_string())
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
    // Every request of dev mode comes from one address (the developer's browser, curl, a load
    // generator on the same machine): a per-address budget would only refuse the developer's own
    // `wrk -c1000` with 429s. The overall cap (`max_requests_in_flight`) still holds.
    file.limits.max_requests_per_client = 0;
    config::validate(&file, &SourceText { name: "dev mode".into(), ..SourceText::default() }).map_err(|e| e.to_string())
}

/// ID tokens live at least a minute: `--access-token-ttl 0s` (every request due for a refresh, as
/// the bench's refresh row wants) must still let the sign-in's ID token validate.
fn id_token_ttl(access_ttl: Duration) -> Duration {
    access_ttl.max(Duration::from_secs(60))
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
        id_token_ttl: id_token_ttl(access_ttl),
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
                    async move {
                        let response = match req.uri().path() {
                            live::PAGE => live::page(Lang::from_locale(req.headers().get("x-trousseau-locale").and_then(|v| v.to_str().ok()))),
                            live::SOCKET => live::socket(req),
                            _ => demo_page(req, &verifier).await,
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
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

/// What the demo app knows about the current request: the headers the proxy sent and the
/// assertion, verified like an app would verify it.
struct DemoRequest {
    lang: Lang,
    /// `x-trousseau-*`, `x-forwarded-*` and `x-request-id`, sorted, as received.
    headers: Vec<(String, String)>,
    /// Header, claims and "expires in" seconds of a verified assertion; or why it did not verify.
    assertion: Option<Result<(serde_json::Value, serde_json::Value), String>>,
    /// A session cookie reached the app (it never should).
    cookie_seen: bool,
}

impl DemoRequest {
    async fn read<B>(req: &Request<B>, verifier: &JwksVerifier) -> DemoRequest {
        let h = req.headers();
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut headers: Vec<(String, String)> = h
            .keys()
            .map(|k| k.as_str())
            .filter(|k| k.starts_with("x-trousseau-") || k.starts_with("x-forwarded-") || *k == "x-request-id")
            .map(|k| (k.to_string(), get(k).unwrap_or_default()))
            .collect();
        headers.sort();
        headers.dedup();
        let assertion = match get("x-trousseau-jwt-assertion") {
            Some(jws) => Some(verifier.verify(&jws).await),
            None => None,
        };
        DemoRequest {
            lang: Lang::from_locale(get("x-trousseau-locale").as_deref()),
            headers,
            assertion,
            cookie_seen: get("cookie").is_some_and(|c| c.contains("trousseau_session")),
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| percent_decode(v))
    }

    fn claims(&self) -> Option<&serde_json::Value> {
        match &self.assertion {
            Some(Ok((_, claims))) => Some(claims),
            _ => None,
        }
    }

    /// A claim from the verified assertion, else the plain header.
    fn value(&self, claim: &str, header: &str) -> Option<String> {
        self.claims()
            .and_then(|c| c[claim].as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .or_else(|| self.header(header))
    }
}

async fn demo_page<B>(req: Request<B>, verifier: &JwksVerifier) -> Response<Body> {
    let demo = DemoRequest::read(&req, verifier).await;
    let verified = matches!(demo.assertion, Some(Ok(_)));
    let lang = demo.lang;
    let name = demo.value("name", "x-trousseau-name").or_else(|| demo.value("email", "x-trousseau-email"));
    let title = match (&name, lang) {
        (Some(n), Lang::En) => format!("Hello, {n}"),
        (Some(n), Lang::Fr) => format!("Bonjour, {n}"),
        (None, _) => lang.pick("Demo app", "Application de démonstration").to_string(),
    };
    let organizations = demo.claims().and_then(|c| c["organizations"].as_array()).map(Vec::len).unwrap_or(0);

    let mut main = String::new();
    // Who: greeting, and whether the assertion verified.
    let status = match &demo.assertion {
        Some(Ok(_)) => format!(
            r#"<span class="badge ok">{}</span>"#,
            escape(lang.pick("✔ Signature verified", "✔ Signature vérifiée"))
        ),
        Some(Err(_)) => format!(r#"<span class="badge warn">{}</span>"#, escape(lang.pick("✘ Signature not verified", "✘ Signature non vérifiée"))),
        None => format!(r#"<span class="badge warn">{}</span>"#, escape(lang.pick("No identity received", "Aucune identité reçue"))),
    };
    main.push_str(&format!(
        r#"<div class="hello">{avatar}<div><h1>{title}</h1><p class="muted">{sub}</p></div><span class="aside">{status}</span></div>
<p class="lead">{intro}</p>
"#,
        avatar = name.as_deref().map(|n| pages::avatar(n, true)).unwrap_or_else(|| pages::Icon::User.badge("")).into_string(),
        title = escape(&title),
        sub = escape(&demo.value("email", "x-trousseau-email").unwrap_or_default()),
        intro = escape(lang.pick(
            "You are looking at the built-in demo app behind trousseau-proxy. It never saw a password or a token: this page shows exactly what any app behind the proxy receives for this request.",
            "Vous êtes dans l'application de démonstration derrière trousseau-proxy. Elle n'a jamais vu ni mot de passe ni jeton : cette page montre exactement ce que toute application derrière le proxy reçoit pour cette requête.",
        )),
    ));

    // Identity and organization, side by side on wide screens.
    main.push_str(r#"<div class="grid wide-first">"#);
    main.push_str(&identity_panel(&demo));
    main.push_str(&organization_panel(&demo, organizations));
    main.push_str("</div>\n");

    // The assertion, verified against the proxy's JWKS.
    main.push_str(&assertion_panel(&demo));

    // The raw headers.
    let rows: String = demo
        .headers
        .iter()
        .map(|(name, value)| {
            let shown = if name == "x-trousseau-jwt-assertion" { format!("{}…", value.chars().take(40).collect::<String>()) } else { value.clone() };
            format!(r#"<tr><th scope="row" class="code">{}</th><td class="code">{}</td></tr>"#, escape(name), escape(&shown))
        })
        .collect();
    let cookie_note = if demo.cookie_seen {
        format!(r#"<p class="status">{}</p>"#, escape(lang.pick("Warning: a session cookie reached the app!", "Attention : un cookie de session a atteint l'application !")))
    } else {
        format!(
            r#"<p class="muted small">{}</p>"#,
            escape(lang.pick(
                "The session cookie never reaches the app, and headers named X-Trousseau-* sent by the browser are removed before these are added.",
                "Le cookie de session n'atteint jamais l'application, et les en-têtes X-Trousseau-* envoyés par le navigateur sont retirés avant d'ajouter ceux-ci.",
            ))
        )
    };
    main.push_str(&format!(
        r#"<section class="panel" aria-labelledby="headers-title" style="margin-top:1rem">
<h2 id="headers-title">{heading}</h2>
<table>{rows}</table>
{cookie_note}
</section>
"#,
        heading = escape(lang.pick("Headers received", "En-têtes reçus")),
    ));

    // What to do next.
    main.push_str(&format!(
        r#"<div class="actions">{switch}<a class="button secondary" href="/.trousseau/userinfo">{userinfo}</a><form method="post" action="/.trousseau/logout"><button type="submit">{signout}</button></form></div>
<hr>
<h2>{next}</h2>
<ul>
<li>{upstream}<br><code>trousseau-proxy dev --upstream http://localhost:3000</code></li>
<li>{refresh}<br><code>trousseau-proxy dev --access-token-ttl 30s</code></li>
<li>{verify} <a href="/.trousseau/jwks.json"><code>/.trousseau/jwks.json</code></a></li>
<li><a href="/live">{live}</a></li>
</ul>
"#,
        switch = if organizations > 1 {
            format!(r#"<a class="button secondary" href="/.trousseau/organizations?rd=/">{}</a>"#, escape(lang.pick("Switch organization", "Changer d'organisation")))
        } else {
            String::new()
        },
        userinfo = escape(lang.pick("Session as JSON", "Session en JSON")),
        signout = escape(lang.pick("Sign out", "Se déconnecter")),
        next = escape(lang.pick("Next", "Et ensuite")),
        upstream = escape(lang.pick("Put your own app behind the proxy:", "Mettez votre application derrière le proxy :")),
        refresh = escape(lang.pick("Watch tokens refresh every 30 seconds:", "Regardez les jetons se renouveler toutes les 30 secondes :")),
        verify = escape(lang.pick("Verify the assertion in your app with the keys at", "Vérifiez l'assertion dans votre application avec les clés de")),
        live = escape(lang.pick("Watch a websocket end when the session does", "Voir un websocket se fermer avec la session")),
    ));

    let frame = pages::Frame { wide: true, tag: Some(lang.pick("Demo app", "Application de démo")), ..pages::Frame::default() };
    let mut r = Response::new(body::full(pages::page(lang, &title, maud::PreEscaped(main), frame)));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert("x-demo-assertion-verified", HeaderValue::from_static(if verified { "true" } else { "false" }));
    r
}

/// Who the user is, from the verified assertion (or the plain headers).
fn identity_panel(demo: &DemoRequest) -> String {
    let lang = demo.lang;
    let mut facts = String::new();
    let mut fact = |label: &str, value_html: String| {
        facts.push_str(&format!("<dt>{}</dt><dd>{}</dd>", escape(label), value_html));
    };
    if let Some(name) = demo.value("name", "x-trousseau-name") {
        fact(lang.pick("Name", "Nom"), escape(&name));
    }
    if let Some(email) = demo.value("email", "x-trousseau-email") {
        let verified = demo.claims().and_then(|c| c["email_verified"].as_bool()) == Some(true);
        let badge = if verified { format!(r#" <span class="badge ok">{}</span>"#, escape(lang.pick("verified", "vérifiée"))) } else { String::new() };
        fact(lang.pick("Email", "E-mail"), format!("{}{badge}", escape(&email)));
    }
    if let Some(sub) = demo.value("sub", "x-trousseau-sub") {
        fact("sub", format!("<span class=\"code\">{}</span>", escape(&sub)));
    }
    if let Some(id) = demo.value("trousseau_user_id", "x-trousseau-user-id") {
        fact("trousseau_user_id", format!("<span class=\"code\">{}</span>", escape(&id)));
    }
    if let Some(locale) = demo.value("locale", "x-trousseau-locale") {
        fact(lang.pick("Locale", "Langue"), format!("<span class=\"code\">{}</span>", escape(&locale)));
    }
    // Pictures are links, never loaded: the demo app loads nothing from elsewhere.
    if let Some(picture) = demo.claims().and_then(|c| c["picture"].as_str()).filter(|p| !p.is_empty()) {
        let html = if picture.starts_with("https://") || picture.starts_with("http://") {
            format!(r#"<a href="{0}" rel="noreferrer noopener">{0}</a>"#, escape(picture))
        } else {
            escape(picture)
        };
        fact(lang.pick("Picture", "Photo"), html);
    }
    let body = if facts.is_empty() {
        format!(
            "<p class=\"muted\">{}</p>",
            escape(lang.pick(
                "No identity for this request: the path is public, or the app is reached without the proxy.",
                "Aucune identité pour cette requête : le chemin est public, ou l'application est appelée sans passer par le proxy.",
            ))
        )
    } else {
        format!("<dl class=\"facts\">{facts}</dl>")
    };
    format!(
        r#"<section class="panel" aria-labelledby="identity-title"><h2 id="identity-title">{}</h2>{body}</section>"#,
        escape(lang.pick("Identity", "Identité"))
    )
}

/// The selected organization and the user's memberships.
fn organization_panel(demo: &DemoRequest, organizations: usize) -> String {
    let lang = demo.lang;
    let selected = demo.header("x-trousseau-org-name").map(|name| {
        let role = demo.header("x-trousseau-org-role").unwrap_or_default();
        format!(
            r#"<p class="hello">{avatar}<span><strong>{name}</strong> <span class="badge">{role}</span><br><span class="muted small code">{slug}</span></span></p>"#,
            avatar = pages::avatar(&name, false).into_string(),
            name = escape(&name),
            role = escape(&pages::role_label(lang, &role)),
            slug = escape(&demo.header("x-trousseau-org-slug").unwrap_or_default()),
        )
    });
    let mut body = selected.unwrap_or_else(|| {
        format!(
            "<p>{}</p>",
            escape(match organizations {
                0 => lang.pick("This account belongs to no organization.", "Ce compte n'appartient à aucune organisation."),
                _ => lang.pick(
                    "No organization selected yet: the app receives no X-Trousseau-Org-* headers.",
                    "Aucune organisation sélectionnée : l'application ne reçoit pas d'en-têtes X-Trousseau-Org-*.",
                ),
            })
        )
    });
    if organizations > 0 {
        let link = lang.pick(
            if organizations > 1 { "Choose or switch organization" } else { "Organization selector" },
            if organizations > 1 { "Choisir ou changer d'organisation" } else { "Sélecteur d'organisation" },
        );
        let memberships = match lang {
            Lang::En => format!("{organizations} membership{} in the assertion.", if organizations > 1 { "s" } else { "" }),
            Lang::Fr => format!("{organizations} appartenance{} dans l'assertion.", if organizations > 1 { "s" } else { "" }),
        };
        body.push_str(&format!(
            r#"<p class="muted small">{} <a href="/.trousseau/organizations?rd=/">{}</a></p>"#,
            escape(&memberships),
            escape(link)
        ));
    }
    format!(
        r#"<section class="panel" aria-labelledby="org-title"><h2 id="org-title">{}</h2>{body}</section>"#,
        escape(lang.pick("Organization", "Organisation"))
    )
}

/// The signed assertion: whether it verified, and its decoded content.
fn assertion_panel(demo: &DemoRequest) -> String {
    let lang = demo.lang;
    let body = match &demo.assertion {
        None => format!(r#"<p class="status">{}</p>"#, escape(lang.pick("No assertion received.", "Aucune assertion reçue."))),
        Some(Err(e)) => format!(r#"<p class="status">✘ {}</p>"#, escape(e)),
        Some(Ok((header, claims))) => {
            let now = chrono::Utc::now().timestamp();
            let expires = claims["exp"].as_i64().map(|exp| exp - now).unwrap_or(0).max(0);
            let facts = format!(
                r#"<dl class="facts"><dt>alg · kid</dt><dd class="code">{alg} · {kid}</dd><dt>iss</dt><dd class="code">{iss}</dd><dt>aud</dt><dd class="code">{aud}</dd><dt>{exp_label}</dt><dd>{expires}</dd></dl>"#,
                alg = escape(header["alg"].as_str().unwrap_or_default()),
                kid = escape(header["kid"].as_str().unwrap_or_default()),
                iss = escape(claims["iss"].as_str().unwrap_or_default()),
                aud = escape(claims["aud"].as_str().map(str::to_string).unwrap_or_else(|| claims["aud"].to_string()).as_str()),
                exp_label = escape(lang.pick("Expires", "Expire")),
                expires = escape(&match lang {
                    Lang::En => format!("in {expires} s (the proxy signs a fresh one as needed)"),
                    Lang::Fr => format!("dans {expires} s (le proxy en signe une nouvelle au besoin)"),
                }),
            );
            format!(
                r#"<p class="ok">{check} {verified}</p>{facts}<details open><summary>{decoded}</summary><div class="grid narrow-first" style="margin:.5rem 0 0"><pre aria-label="{header_label}">{header}</pre><pre aria-label="{claims_label}">{claims}</pre></div></details>"#,
                check = pages::Icon::Check.svg().into_string().replace("<svg ", r#"<svg style="width:1.1em;height:1.1em;vertical-align:-.2em" "#),
                verified = escape(lang.pick("Signature verified against /.trousseau/jwks.json.", "Signature vérifiée avec /.trousseau/jwks.json.")),
                decoded = escape(lang.pick("Decoded header and claims", "En-tête et claims décodés")),
                header_label = escape(lang.pick("JWS header", "En-tête JWS")),
                claims_label = escape(lang.pick("Claims", "Claims")),
                header = escape(&serde_json::to_string_pretty(header).unwrap_or_default()),
                claims = escape(&serde_json::to_string_pretty(claims).unwrap_or_default()),
            )
        }
    };
    format!(
        r#"<section class="panel" aria-labelledby="assertion-title"><h2 id="assertion-title">{}</h2>{body}</section>"#,
        escape(lang.pick("Signed assertion (X-Trousseau-Jwt-Assertion)", "Assertion signée (X-Trousseau-Jwt-Assertion)"))
    )
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}
