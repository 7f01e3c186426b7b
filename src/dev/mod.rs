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

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};

use maud::{html, Markup, PreEscaped};

use crate::body::{self, Body};
use crate::config::{self, FileConfig, HumanDuration, SourceText};
use crate::devidp::{DevIdp, DevIdpConfig, DevUser};
use crate::pages::{self, Lang};

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
    /// Export sampled requests' spans to this OpenTelemetry collector (OTLP/HTTP, as
    /// `telemetry.otlp_endpoint`: `http://127.0.0.1:4318` for a local Jaeger or collector).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
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
    let mut settings = dev_settings(&listen.to_string(), &public_origin, &upstream, &idp.issuer())?;
    if let Some(endpoint) = args.otlp_endpoint {
        crate::trace::otlp::traces_uri(&endpoint).map_err(|e| format!("--otlp-endpoint: {e}"))?;
        settings.telemetry.otlp_endpoint = Some(endpoint);
    }

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

/// Fetches the proxy's JWKS and verifies assertions with it as an app written in Rust would: with
/// `jsonwebtoken`, the most used JWT crate, not with the proxy's own code — so the demo page, and
/// the tests that use this, show that our assertions verify with an independent implementation
/// (ES256 only, `exp` checked with a minute's leeway, the key chosen by `kid`).
pub struct JwksVerifier {
    url: String,
    keys: tokio::sync::RwLock<jsonwebtoken::jwk::JwkSet>,
}

impl JwksVerifier {
    /// A verifier for the JWKS at `url`.
    pub fn new(url: String) -> JwksVerifier {
        JwksVerifier { url, keys: tokio::sync::RwLock::new(jsonwebtoken::jwk::JwkSet { keys: Vec::new() }) }
    }

    async fn fetch(&self) -> Result<(), String> {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri: http::Uri = self.url.parse().map_err(|e| format!("{e}"))?;
        let resp = client.get(uri).await.map_err(|e| e.to_string())?;
        let bytes = Limited::new(resp.into_body(), 64 * 1024).collect().await.map_err(|e| e.to_string())?.to_bytes();
        *self.keys.write().await = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Verifies a compact ES256 JWS and returns its header and claims.
    pub async fn verify(&self, jws: &str) -> Result<(serde_json::Value, serde_json::Value), String> {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation};
        let header = jsonwebtoken::decode_header(jws).map_err(|e| e.to_string())?;
        if header.alg != Algorithm::ES256 {
            return Err("alg is not ES256".into());
        }
        let kid = header.kid.clone().unwrap_or_default();
        let mut validation = Validation::new(Algorithm::ES256);
        // The audience is the app's to check (the demo shows it); `exp` is checked here.
        validation.validate_aud = false;
        for attempt in 0..2 {
            let key = self.keys.read().await.find(&kid).map(DecodingKey::from_jwk);
            match key {
                Some(key) => {
                    let key = key.map_err(|e| e.to_string())?;
                    let data = jsonwebtoken::decode::<serde_json::Value>(jws, &key, &validation)
                        .map_err(|e| format!("does not verify: {e}"))?;
                    let header = serde_json::to_value(&data.header).map_err(|e| e.to_string())?;
                    return Ok((header, data.claims));
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
    let main = html! {
        // Who: greeting, and whether the assertion verified.
        div.hello {
            (name.as_deref().map(|n| pages::avatar(n, true)).unwrap_or_else(|| pages::Icon::User.badge("")))
            div { h1 { (title) } p.muted { (demo.value("email", "x-trousseau-email").unwrap_or_default()) } }
            span.aside { (assertion_badge(&demo)) }
        }
        p.lead { (lang.pick(
            "You are looking at the built-in demo app behind trousseau-proxy. It never saw a password or a token: this page shows exactly what any app behind the proxy receives for this request.",
            "Vous êtes dans l'application de démonstration derrière trousseau-proxy. Elle n'a jamais vu ni mot de passe ni jeton : cette page montre exactement ce que toute application derrière le proxy reçoit pour cette requête.",
        )) }
        // Identity and organization, side by side on wide screens.
        div class="grid wide-first" { (identity_panel(&demo)) (organization_panel(&demo, organizations)) }
        // The assertion, verified against the proxy's JWKS.
        (assertion_panel(&demo))
        (headers_panel(&demo))
        (next_steps(lang, organizations))
    };
    let frame = pages::Frame { wide: true, tag: Some(lang.pick("Demo app", "Application de démo")), ..pages::Frame::default() };
    let mut r = Response::new(body::full(pages::page(lang, &title, main, frame)));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert("x-demo-assertion-verified", HeaderValue::from_static(if verified { "true" } else { "false" }));
    r
}

/// Whether the assertion came and verified, as a badge.
fn assertion_badge(demo: &DemoRequest) -> Markup {
    let lang = demo.lang;
    match &demo.assertion {
        Some(Ok(_)) => html! { span class="badge ok" { (lang.pick("✔ Signature verified", "✔ Signature vérifiée")) } },
        Some(Err(_)) => html! { span class="badge warn" { (lang.pick("✘ Signature not verified", "✘ Signature non vérifiée")) } },
        None => html! { span class="badge warn" { (lang.pick("No identity received", "Aucune identité reçue")) } },
    }
}

/// The raw headers the app received, and whether a session cookie reached it.
fn headers_panel(demo: &DemoRequest) -> Markup {
    let lang = demo.lang;
    html! {
        section.panel aria-labelledby="headers-title" style="margin-top:1rem" {
            h2 #headers-title { (lang.pick("Headers received", "En-têtes reçus")) }
            table {
                @for (name, value) in &demo.headers {
                    tr {
                        th scope="row" class="code" { (name) }
                        td.code {
                            @if name == "x-trousseau-jwt-assertion" { (value.chars().take(40).collect::<String>()) "…" } @else { (value) }
                        }
                    }
                }
            }
            @if demo.cookie_seen {
                p.status { (lang.pick("Warning: a session cookie reached the app!", "Attention : un cookie de session a atteint l'application !")) }
            } @else {
                p class="muted small" { (lang.pick(
                    "The session cookie never reaches the app, and headers named X-Trousseau-* sent by the browser are removed before these are added.",
                    "Le cookie de session n'atteint jamais l'application, et les en-têtes X-Trousseau-* envoyés par le navigateur sont retirés avant d'ajouter ceux-ci.",
                )) }
            }
        }
    }
}

/// What to do next: switch organization, see the session, sign out, and where to go from here.
fn next_steps(lang: Lang, organizations: usize) -> Markup {
    html! {
        div.actions {
            @if organizations > 1 {
                a class="button secondary" href="/.trousseau/organizations?rd=/" { (lang.pick("Switch organization", "Changer d'organisation")) }
            }
            a class="button secondary" href="/.trousseau/userinfo" { (lang.pick("Session as JSON", "Session en JSON")) }
            form method="post" action="/.trousseau/logout" { button type="submit" { (lang.pick("Sign out", "Se déconnecter")) } }
        }
        hr;
        h2 { (lang.pick("Next", "Et ensuite")) }
        ul {
            li { (lang.pick("Put your own app behind the proxy:", "Mettez votre application derrière le proxy :")) br; code { "trousseau-proxy dev --upstream http://localhost:3000" } }
            li { (lang.pick("Watch tokens refresh every 30 seconds:", "Regardez les jetons se renouveler toutes les 30 secondes :")) br; code { "trousseau-proxy dev --access-token-ttl 30s" } }
            li {
                (lang.pick("Verify the assertion in your app with the keys at", "Vérifiez l'assertion dans votre application avec les clés de")) " "
                a href="/.trousseau/jwks.json" { code { "/.trousseau/jwks.json" } }
            }
            li { a href="/live" { (lang.pick("Watch a websocket end when the session does", "Voir un websocket se fermer avec la session")) } }
        }
    }
}

/// Who the user is, from the verified assertion (or the plain headers).
fn identity_panel(demo: &DemoRequest) -> Markup {
    let lang = demo.lang;
    let email_verified = demo.claims().and_then(|c| c["email_verified"].as_bool()) == Some(true);
    // Pictures are links, never loaded: the demo app loads nothing from elsewhere.
    let picture = demo.claims().and_then(|c| c["picture"].as_str()).filter(|p| !p.is_empty()).map(str::to_string);
    let codes = [
        ("sub", demo.value("sub", "x-trousseau-sub")),
        ("trousseau_user_id", demo.value("trousseau_user_id", "x-trousseau-user-id")),
        (lang.pick("Locale", "Langue"), demo.value("locale", "x-trousseau-locale")),
    ];
    let (name, email) = (demo.value("name", "x-trousseau-name"), demo.value("email", "x-trousseau-email"));
    let anything = name.is_some() || email.is_some() || picture.is_some() || codes.iter().any(|(_, v)| v.is_some());
    html! {
        section.panel aria-labelledby="identity-title" {
            h2 #identity-title { (lang.pick("Identity", "Identité")) }
            @if !anything {
                p.muted { (lang.pick(
                    "No identity for this request: the path is public, or the app is reached without the proxy.",
                    "Aucune identité pour cette requête : le chemin est public, ou l'application est appelée sans passer par le proxy.",
                )) }
            } @else {
                dl.facts {
                    @if let Some(name) = &name { dt { (lang.pick("Name", "Nom")) } dd { (name) } }
                    @if let Some(email) = &email {
                        dt { (lang.pick("Email", "E-mail")) }
                        dd { (email) @if email_verified { " " span class="badge ok" { (lang.pick("verified", "vérifiée")) } } }
                    }
                    @for (label, value) in &codes {
                        @if let Some(value) = value { dt { (label) } dd { span.code { (value) } } }
                    }
                    @if let Some(picture) = &picture {
                        dt { (lang.pick("Picture", "Photo")) }
                        dd {
                            @if picture.starts_with("https://") || picture.starts_with("http://") {
                                a href=(picture) rel="noreferrer noopener" { (picture) }
                            } @else { (picture) }
                        }
                    }
                }
            }
        }
    }
}

/// The selected organization and the user's memberships.
fn organization_panel(demo: &DemoRequest, organizations: usize) -> Markup {
    let lang = demo.lang;
    let memberships = match lang {
        Lang::En => format!("{organizations} membership{} in the assertion.", if organizations > 1 { "s" } else { "" }),
        Lang::Fr => format!("{organizations} appartenance{} dans l'assertion.", if organizations > 1 { "s" } else { "" }),
    };
    let link = lang.pick(
        if organizations > 1 { "Choose or switch organization" } else { "Organization selector" },
        if organizations > 1 { "Choisir ou changer d'organisation" } else { "Sélecteur d'organisation" },
    );
    html! {
        section.panel aria-labelledby="org-title" {
            h2 #org-title { (lang.pick("Organization", "Organisation")) }
            @if let Some(name) = demo.header("x-trousseau-org-name") {
                p.hello {
                    (pages::avatar(&name, false))
                    span {
                        strong { (name) } " " span.badge { (pages::role_label(lang, &demo.header("x-trousseau-org-role").unwrap_or_default())) }
                        br; span class="muted small code" { (demo.header("x-trousseau-org-slug").unwrap_or_default()) }
                    }
                }
            } @else if organizations == 0 {
                p { (lang.pick("This account belongs to no organization.", "Ce compte n'appartient à aucune organisation.")) }
            } @else {
                p { (lang.pick(
                    "No organization selected yet: the app receives no X-Trousseau-Org-* headers.",
                    "Aucune organisation sélectionnée : l'application ne reçoit pas d'en-têtes X-Trousseau-Org-*.",
                )) }
            }
            @if organizations > 0 {
                p class="muted small" { (memberships) " " a href="/.trousseau/organizations?rd=/" { (link) } }
            }
        }
    }
}

/// The signed assertion: whether it verified, and its decoded content.
fn assertion_panel(demo: &DemoRequest) -> Markup {
    let lang = demo.lang;
    html! {
        section.panel aria-labelledby="assertion-title" {
            h2 #assertion-title { (lang.pick("Signed assertion (X-Trousseau-Jwt-Assertion)", "Assertion signée (X-Trousseau-Jwt-Assertion)")) }
            @match &demo.assertion {
                None => p.status { (lang.pick("No assertion received.", "Aucune assertion reçue.")) },
                Some(Err(e)) => p.status { "✘ " (e) },
                Some(Ok((header, claims))) => (verified_assertion(lang, header, claims)),
            }
        }
    }
}

/// A verified assertion's header and claims, and when it expires.
fn verified_assertion(lang: Lang, header: &serde_json::Value, claims: &serde_json::Value) -> Markup {
    let expires = claims["exp"].as_i64().map(|exp| exp - chrono::Utc::now().timestamp()).unwrap_or(0).max(0);
    let expires = match lang {
        Lang::En => format!("in {expires} s (the proxy signs a fresh one as needed)"),
        Lang::Fr => format!("dans {expires} s (le proxy en signe une nouvelle au besoin)"),
    };
    let aud = claims["aud"].as_str().map(str::to_string).unwrap_or_else(|| claims["aud"].to_string());
    let check = pages::Icon::Check.svg().into_string().replace("<svg ", r#"<svg style="width:1.1em;height:1.1em;vertical-align:-.2em" "#);
    html! {
        p.ok { (PreEscaped(check)) " " (lang.pick("Signature verified against /.trousseau/jwks.json.", "Signature vérifiée avec /.trousseau/jwks.json.")) }
        dl.facts {
            dt { "alg · kid" } dd.code { (header["alg"].as_str().unwrap_or_default()) " · " (header["kid"].as_str().unwrap_or_default()) }
            dt { "iss" } dd.code { (claims["iss"].as_str().unwrap_or_default()) }
            dt { "aud" } dd.code { (aud) }
            dt { (lang.pick("Expires", "Expire")) } dd { (expires) }
        }
        details open {
            summary { (lang.pick("Decoded header and claims", "En-tête et claims décodés")) }
            div class="grid narrow-first" style="margin:.5rem 0 0" {
                pre aria-label=(lang.pick("JWS header", "En-tête JWS")) { (serde_json::to_string_pretty(header).unwrap_or_default()) }
                pre aria-label=(lang.pick("Claims", "Claims")) { (serde_json::to_string_pretty(claims).unwrap_or_default()) }
            }
        }
    }
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}
