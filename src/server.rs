//! The life of a request, top to bottom, and the listener that serves it.
//!
//! [`App::handle`] is the whole request path, in order: strip spoofed headers and our cookies →
//! reserved `/.trousseau/` endpoints → public routes → load the session → refresh if due →
//! authorize → add identity headers → forward upstream → set cookies → log. Each step is a plain
//! function below; answers the proxy makes itself come from [`crate::pages`] and [`answer`].

use std::future::Future;
use std::pin::Pin;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::bearer::{BearerAuth, BearerOutcome};
use crate::body::{self, Body};
use crate::config::{RevocationKind, Settings, StoreKind};
use crate::devidp::DevIdp;
use crate::identity::{self, AssertionSettings, Assertions, Signer};
use crate::limits::balance::{Balance, Worker};
use crate::limits::listener::{serve_connections, Connection, ListenerKind};
use crate::limits::{inflight::InFlight, Limits, Refusal};
use crate::metrics::{AnsweredBy, Metrics, Outcome};
use crate::oidc::{LoginState, Oidc, OidcError};
use crate::util::clock::{now_millis, now_secs};
use crate::pages::Lang;
use crate::policy::{Decision, Policy};
use crate::proxy::{ForwardContext, ProxyError, Upstream, UpstreamSettings};
use crate::session::cookies::{strip_cookies, CookieSettings, RequestCookies, SessionCodec};
use crate::session::refresh::{RefreshOutcome, Refresher};
use crate::session::redis::{Redis, RedisRevocations, RedisStore, RefreshCoordinator};
use crate::session::revocation::{RevocationSet, Revocations};
use crate::session::seal::{AppBinding, Sealer};
use crate::session::store::{MemoryStore, SessionStore, StoreError};
use crate::session::Session;

/// Prefix of every path the proxy answers itself.
pub const RESERVED_PREFIX: &str = "/.trousseau/";

/// Sealing purpose of login-state cookies (never interchangeable with a session).
#[doc(hidden)]
pub const LOGIN_STATE_PURPOSE: &str = "login-state";

/// Idle connections each worker keeps to the app (counted in the open-file budget).
const POOL_MAX_IDLE_PER_WORKER: usize = 256;

/// Sealing purpose of the handle a server-side store's cookie carries.
const SESSION_HANDLE_PURPOSE: &str = "session-handle";

/// How long one sign-in attempt may take.
const LOGIN_STATE_TTL: Duration = Duration::from_secs(600);

/// At most this many sign-in attempts (state cookies) at once; older ones are dropped first.
const MAX_LOGIN_ATTEMPTS: usize = 4;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting that only fails once used (key file, CA file).
    #[error("{0}")]
    Setup(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Everything a request needs, built once at start.
pub struct App {
    settings: Settings,
    oidc: Arc<Oidc>,
    sealer: Arc<Sealer>,
    codec: SessionCodec,
    login_cookie_prefix: String,
    assertions: Assertions,
    upstream: Upstream,
    policy: Policy,
    refresher: Refresher,
    revocations: RevocationSet,
    store: Option<Arc<dyn SessionStore>>,
    /// Shared by the replicas (`session.redis_url`): store, revocations, refresh coordination.
    redis: Option<Arc<Redis>>,
    bearer: Option<BearerAuth>,
    devidp: Option<Arc<DevIdp>>,
    metrics: Metrics,
    /// Connection and request limits, shared by the workers and the metrics listener.
    limits: Arc<Limits>,
}

impl App {
    /// Builds the app from validated settings. `devidp`, when given, is served under its path
    /// prefix (dev mode).
    pub fn new(settings: Settings, devidp: Option<Arc<DevIdp>>) -> Result<Arc<App>, StartError> {
        let oidc = Arc::new(Oidc::new(settings.oidc.clone()).map_err(|e| StartError::Setup(format!("oidc.ca_file: {e}")))?);
        // Everything sealed is bound to this application: another proxy given the same secret
        // cannot open (nor be handed) our cookies, handles, login states or Redis records.
        let app_binding = AppBinding {
            issuer: &settings.oidc.issuer,
            client_id: &settings.oidc.client_id,
            public_url: &settings.public_origin,
        };
        let sealer = Arc::new(
            Sealer::new(&settings.session.secrets, app_binding).map_err(|e| StartError::Setup(format!("session.secrets: {e}")))?,
        );
        let app_tag = app_binding.tag();
        let cookie = CookieSettings::new(&settings.session.cookie_name, settings.secure_cookies);
        let codec = SessionCodec::new(sealer.clone(), cookie);
        let login_cookie_prefix = format!(
            "{}{}_login_",
            if settings.secure_cookies { "__Host-" } else { "" },
            settings.session.cookie_name
        );
        let signer = if settings.identity.signing_keys_pem.is_empty() {
            tracing::warn!(
                "identity.signing_key_file is not set: signing assertions with an ephemeral key; \
                 apps must fetch /.trousseau/jwks.json and replicas will not share keys"
            );
            Signer::generate()
        } else {
            Signer::from_pem(&settings.identity.signing_keys_pem)
                .map_err(|e| StartError::Setup(format!("identity.signing_key_file: {e}")))?
        };
        let assertions = Assertions::new(
            Arc::new(signer),
            AssertionSettings {
                issuer: settings.public_origin.clone(),
                audience: settings.identity.audience.clone(),
                ttl: settings.identity.assertion_ttl,
            },
        );
        let upstream = Upstream::new(UpstreamSettings {
            url: settings.upstream.clone(),
            preserve_host: settings.proxy.preserve_host,
            ca_file: settings.proxy.ca_file.as_ref().map(Into::into),
            connect_timeout: settings.proxy.connect_timeout.0,
            response_timeout: settings.proxy.response_timeout.0,
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: POOL_MAX_IDLE_PER_WORKER,
            request_body_timeout: settings.limits.request_body_timeout,
            request_body_min_rate: settings.limits.request_body_min_rate,
        })
        .map_err(|e| StartError::Setup(format!("upstream: {e}")))?;
        let policy = Policy::new(&settings.routes, &settings.organization);
        // Several replicas share Redis: server-side sessions, revocations, and one refresh per token.
        let redis = match &settings.session.redis_url {
            Some(url) => {
                let ca = match &settings.session.redis_ca_file {
                    Some(path) => Some(std::fs::read(path).map_err(|e| StartError::Setup(format!("session.redis_ca_file: {}: {e}", path.display())))?),
                    None => None,
                };
                Some(Arc::new(Redis::connect(url, ca).map_err(|e| StartError::Setup(format!("session.redis_url: {e}")))?))
            }
            None => None,
        };
        let mut refresher = Refresher::new(oidc.clone(), settings.session.refresh_skew, settings.session.refresh_grace);
        if let Some(redis) = &redis {
            // The lock outlives the slowest refresh (token call, plus a JWKS refetch).
            let lock_ttl = settings.oidc.timeout * 2 + Duration::from_secs(5);
            refresher = refresher.with_coordinator(Arc::new(RefreshCoordinator::new(redis.clone(), sealer.clone(), lock_ttl)));
        }
        let revocations = match (settings.session.revocations, &redis) {
            (RevocationKind::Redis, Some(redis)) => RevocationSet::Redis(RedisRevocations::new(
                redis.clone(),
                settings.session.max_lifetime,
                settings.session.revocation_staleness,
                app_tag.clone(),
            )),
            _ => RevocationSet::Memory(Revocations::new(settings.session.max_lifetime)),
        };
        let store: Option<Arc<dyn SessionStore>> = match (settings.session.store, &redis) {
            (StoreKind::Cookie, _) => None,
            (StoreKind::Memory, _) => Some(Arc::new(MemoryStore::new(
                settings.session.memory_store_max_bytes,
                settings.session.max_sessions_per_user as usize,
            ))),
            (StoreKind::Redis, Some(redis)) => Some(Arc::new(RedisStore::new(
                redis.clone(),
                sealer.clone(),
                app_tag,
                settings.session.max_sessions_per_user,
                settings.session.max_lifetime,
            ))),
            (StoreKind::Redis, None) => return Err(StartError::Setup("session.store: redis needs session.redis_url".into())),
        };
        if let Some(redis) = &redis {
            tracing::info!(redis = %redis.display(), store = ?settings.session.store, revocations = ?settings.session.revocations, "sharing state with the other replicas through Redis");
        }
        let bearer = settings.bearer_userinfo.then(|| BearerAuth::new(oidc.clone(), settings.bearer_limits));
        if bearer.is_some() {
            tracing::info!(
                "api.bearer: userinfo: bearer tokens must be issued to this client (checked by token introspection); \
                 if Trousseau does not advertise introspection, a warning follows once its configuration is loaded and \
                 userinfo alone decides, which also accepts tokens issued to other applications of the same Trousseau"
            );
        }
        Ok(Arc::new(App {
            limits: Arc::new(Limits::new(settings.limits.clone())),
            revocations,
            store,
            redis,
            bearer,
            settings,
            oidc,
            sealer,
            codec,
            login_cookie_prefix,
            assertions,
            upstream,
            policy,
            refresher,
            devidp,
            metrics: Metrics::new(),
        }))
    }

    /// The relying party (readiness, discovery).
    pub fn oidc(&self) -> &Arc<Oidc> {
        &self.oidc
    }

    /// The validated settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The request path's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The connection and request limits in force, with their counters.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// `/metrics` as served on `metrics_listen` (Prometheus text format 0.0.4).
    pub fn metrics_text(&self) -> String {
        self.metrics.render(&crate::metrics::Sources {
            refresh: self.refresher.stats(),
            idp_latency: self.oidc.call_latency(),
            revocations_held: self.revocations.len(),
            redis: self.redis.as_deref(),
            limits: &self.limits,
        })
    }

    /// The answer to a request refused by a limit (429 for one client, 503 for everyone), counted
    /// and logged like any other; a warning at most once a second says who is being refused.
    fn refuse(&self, req: &Request<Incoming>, peer: SocketAddr, refusal: Refusal) -> Response<Body> {
        let started = Instant::now();
        self.metrics.request(Outcome::Limited);
        static WARNING: crate::logging::LogBudget = crate::logging::LogBudget::every_second();
        if let Some(unlogged) = WARNING.take() {
            let (limit, value) = match refusal {
                Refusal::PerClient => ("limits.max_requests_per_client", self.limits.settings().max_requests_per_client),
                Refusal::InFlight => ("limits.max_requests_in_flight", self.limits.settings().max_requests_in_flight),
            };
            tracing::warn!(client = %peer.ip(), limit, value, unlogged, "request refused: too many requests in flight");
        }
        let mut response = answer::over_limit(is_browser_navigation(req), self.lang(req, None), refusal);
        let request_id = new_request_id();
        response.headers_mut().insert(X_REQUEST_ID.clone(), request_id.clone());
        crate::logging::access(&crate::logging::Access {
            method: req.method().as_str(),
            path: req.uri().path(),
            status: response.status().as_u16(),
            latency: started.elapsed(),
            sub: "-",
            request_id: request_id.to_str().unwrap_or("-"),
        });
        response
    }

    /// Serves one request. Never fails: every problem becomes an answer.
    pub async fn handle(self: Arc<Self>, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let request_id = request_id(&mut req);

        // 1. Nothing the client sent may pose as our identity headers or reach the app as our cookie.
        identity::strip_spoofed(req.headers_mut());
        self.settings.identity.extra_headers.strip(req.headers_mut());
        // Hop-by-hop fields go now, before we add anything: a client's `Connection:` must not be
        // able to name (and so remove) a header the proxy vouches for.
        let upgrade = crate::proxy::wants_upgrade(req.headers());
        crate::proxy::remove_hop_by_hop(req.headers_mut(), upgrade);
        let cookies = RequestCookies::from_headers(req.headers());
        strip_cookies(req.headers_mut(), |name| self.is_our_cookie(name));

        let mut ctx = RequestCtx {
            cookies,
            set_cookies: Vec::new(),
            sub: None,
            peer,
            request_id: request_id.clone(),
            answered_by: AnsweredBy::Proxy,
        };
        let mut response = self.route(req, &mut ctx).await;

        // Metrics: one outcome per request, from who answered and with which status.
        self.metrics.request(Outcome::classify(ctx.answered_by, response.status()));

        // Cookies decided along the way; the request id goes back to the client too.
        for value in ctx.set_cookies.drain(..) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        response.headers_mut().insert(X_REQUEST_ID.clone(), request_id.clone());
        crate::logging::access(&crate::logging::Access {
            method: method.as_str(),
            path: &path,
            status: response.status().as_u16(),
            latency: started.elapsed(),
            sub: ctx.sub.as_deref().unwrap_or("-"),
            request_id: request_id.to_str().unwrap_or("-"),
        });
        response
    }

    async fn route(&self, req: Request<Incoming>, ctx: &mut RequestCtx) -> Response<Body> {
        let path = req.uri().path();

        // 2. Our own endpoints.
        if path.starts_with(RESERVED_PREFIX) || path == "/.trousseau" {
            ctx.answered_by = AnsweredBy::Reserved;
            if let Some(idp) = &self.devidp {
                if !idp.path_prefix().is_empty() && path.starts_with(idp.path_prefix()) {
                    // Boxed as `dyn Future + Send` for the same reason as in the refresher.
                    let answer: Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>> = Box::pin(idp.handle(req));
                    return answer.await;
                }
            }
            return self.reserved(req, ctx).await;
        }

        // 3. Public routes: proxied without a session (spoofed headers already gone).
        if self.policy.is_public(path) {
            let browser = is_browser_navigation(&req);
            return self.forward(req, ctx, None, browser).await;
        }

        // 4. The session, if any (or, for API clients, a Trousseau access token).
        let browser = is_browser_navigation(&req);
        if let Some(answer) = self.bearer_request(&req, ctx).await {
            return match answer {
                Ok(session) => {
                    // The Trousseau token is a credential for Trousseau: the app gets it only when
                    // `identity.pass_access_token` says so, like for cookie sessions.
                    let mut req = req;
                    if !self.settings.identity.pass_access_token {
                        req.headers_mut().remove(header::AUTHORIZATION);
                    }
                    self.authorize_and_forward(req, ctx, &session, browser).await
                }
                Err(response) => response,
            };
        }
        let session = match self.load_session(&ctx.cookies).await {
            Ok(Some(session)) => session,
            Ok(None) => return self.unauthenticated(&req, ctx, browser),
            Err(e) => return self.store_unavailable(&req, &e),
        };
        ctx.sub = Some(session.identity.sub.clone());

        // 5. Refresh when the access token is due.
        let session = match self.refresh_step(session, ctx).await {
            Ok(session) => session,
            Err(NotServed::Ended) => return self.unauthenticated(&req, ctx, browser),
            Err(NotServed::IdpUnavailable) => return answer::unavailable(browser, self.lang(&req, None)),
            Err(NotServed::Store(e)) => return self.store_unavailable(&req, &e),
        };

        // 6–8. Policy, identity headers, the app.
        self.authorize_and_forward(req, ctx, &session, browser).await
    }

    /// The refresh step shared by the request path and forward-auth: refreshes when due, re-selects
    /// the organization and re-issues the cookie after a refresh, and forgets an ended session.
    async fn refresh_step(&self, session: Arc<Session>, ctx: &mut RequestCtx) -> Result<Arc<Session>, NotServed> {
        match self.refresher.refresh_if_due(session).await {
            RefreshOutcome::Fresh(session) | RefreshOutcome::Stale(session) => Ok(session),
            RefreshOutcome::Refreshed(mut session) => {
                if session.org.is_none() {
                    Arc::make_mut(&mut session).org = self.policy.auto_select(&session);
                }
                self.save_session(&session, ctx).await.map_err(NotServed::Store)?;
                Ok(session)
            }
            RefreshOutcome::Ended => {
                self.end_session(None, ctx).await;
                Err(NotServed::Ended)
            }
            RefreshOutcome::Unavailable => Err(NotServed::IdpUnavailable),
            RefreshOutcome::StoreUnavailable(e) => Err(NotServed::Store(e)),
        }
    }

    /// Applies the route policy to a signed-in request, then forwards it with the identity.
    async fn authorize_and_forward(&self, req: Request<Incoming>, ctx: &mut RequestCtx, session: &Session, browser: bool) -> Response<Body> {
        match self.policy.authorize(session, req.method(), req.uri().path()) {
            Decision::Allow => {}
            Decision::ChooseOrganization => {
                let lang = self.lang(&req, Some(session));
                return answer::choose_organization(browser, lang, &return_to_of(&req));
            }
            Decision::Deny(denial) => {
                let lang = self.lang(&req, Some(session));
                return answer::forbidden(browser, lang, &denial, session);
            }
        }
        self.forward(req, ctx, Some(session), browser).await
    }

    /// `Authorization: Bearer <Trousseau access token>` from an API client, when `api.bearer:
    /// userinfo` is on and no session cookie came along. `None`: not a bearer request. A token
    /// whose Trousseau session (`sid`) or user (`sub`, session begun before) was ended by a
    /// back-channel logout is refused like a session cookie would be — on every replica with
    /// `session.revocations: redis`.
    async fn bearer_request(&self, req: &Request<Incoming>, ctx: &mut RequestCtx) -> Option<Result<Session, Response<Body>>> {
        let bearer = self.bearer.as_ref()?;
        if self.codec.cookie().read_chunked(&ctx.cookies).is_some() {
            return None;
        }
        let token = BearerAuth::token(req.headers().get(header::AUTHORIZATION)?)?;
        Some(match bearer.resolve(token).await {
            BearerOutcome::Valid(mut session) => {
                match self.revocations.is_revoked(&session).await {
                    Ok(false) => {}
                    Ok(true) => {
                        bearer.forget(token).await;
                        return Some(Err(answer::invalid_bearer()));
                    }
                    Err(e) => return Some(Err(self.store_unavailable(req, &e))),
                }
                session.org = self.policy.auto_select(&session);
                ctx.sub = Some(session.identity.sub.clone());
                Ok(*session)
            }
            BearerOutcome::Invalid => Err(answer::invalid_bearer()),
            BearerOutcome::Unavailable => Err(answer::unavailable(false, self.lang(req, None))),
            BearerOutcome::Throttled(retry_after) => {
                let mut r = answer::json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"error": "token_checks_throttled", "error_description": "Too many new access tokens to check with Trousseau right now; retry shortly."}),
                );
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs()));
                Err(r)
            }
        })
    }

    /// Forwards to the upstream, with identity headers when there is a session. `browser` chooses
    /// the form of the error answer when the app cannot be reached.
    async fn forward(&self, req: Request<Incoming>, ctx: &mut RequestCtx, session: Option<&Session>, browser: bool) -> Response<Body> {
        let (mut parts, incoming) = req.into_parts();
        // For the error page only: its language is worked out if it is needed.
        let accept_language = parts.headers.get(header::ACCEPT_LANGUAGE).cloned();
        if let Some(session) = session {
            self.assertions.insert_identity_headers(&mut parts.headers, session, self.settings.identity.pass_access_token);
            self.settings.identity.extra_headers.insert(&mut parts.headers, session);
        }
        parts.headers.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let fctx = ForwardContext {
            client_ip: ctx.peer.ip(),
            proto: if self.settings.secure_cookies { "https" } else { "http" },
            host,
            trust_forwarded: self.settings.proxy.trust_forwarded_headers,
        };
        let req = Request::from_parts(parts, body::stream(incoming));
        let sent = Instant::now();
        let result = self.upstream.forward(req, &fctx).await;
        self.metrics.upstream_latency(sent.elapsed());
        match result {
            Ok(mut response) => {
                ctx.answered_by = AnsweredBy::Upstream;
                self.drop_app_cookies_of_ours(response.headers_mut());
                response
            }
            Err(e) => {
                let request_id = ctx.request_id.to_str().unwrap_or("-");
                match e.client_fault() {
                    // The client's doing (its body broke off, was malformed, or trickled): not an
                    // app failure, and not worth more than a line a second.
                    Some(fault) => self.limits.client_fault(fault, ctx.peer.ip(), request_id, &e),
                    None => tracing::warn!(error = %e, request_id, "upstream request failed"),
                }
                answer::upstream_failed(browser, self.lang_of(accept_language.as_ref(), session), &e)
            }
        }
    }

    /// `/.trousseau/*`.
    async fn reserved(&self, req: Request<Incoming>, ctx: &mut RequestCtx) -> Response<Body> {
        let path = req.uri().path();
        let endpoint = path.strip_prefix(RESERVED_PREFIX).unwrap_or("");
        match (req.method(), endpoint) {
            (&Method::GET | &Method::HEAD, "healthz") => answer::text(StatusCode::OK, "ok\n"),
            (&Method::GET | &Method::HEAD, "readyz") => {
                if self.oidc.is_ready() {
                    answer::text(StatusCode::OK, "ready\n")
                } else {
                    let mut r = answer::text(StatusCode::SERVICE_UNAVAILABLE, "identity provider not loaded yet\n");
                    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                    r
                }
            }
            (&Method::GET | &Method::HEAD, "jwks.json") => answer::jwks(self.assertions.signer().jwks_json()),
            (&Method::GET | &Method::HEAD, "login") => {
                let rd = query_param(req.uri().query(), "rd").unwrap_or_default();
                let return_to = safe_return_to(&rd);
                self.start_login(ctx, return_to, self.lang(&req, None))
            }
            (&Method::GET, "callback") => self.callback(&req, ctx).await,
            (&Method::GET | &Method::POST, "logout") => self.logout(&req, ctx).await,
            (_, "auth") => self.forward_auth(req, ctx).await,
            (_, e) if e.starts_with("auth/") => self.forward_auth(req, ctx).await,
            (&Method::POST, "backchannel-logout") => self.backchannel_logout(req, ctx).await,
            (&Method::GET | &Method::HEAD, "organizations") => self.organizations_page(&req, ctx).await,
            (&Method::POST, "organizations") => self.choose_organization(req, ctx).await,
            (&Method::GET | &Method::HEAD, "userinfo") => match self.load_session(&ctx.cookies).await {
                Ok(Some(session)) => {
                    ctx.sub = Some(session.identity.sub.clone());
                    answer::userinfo(&session)
                }
                Ok(None) => answer::unauthenticated_json(&self.login_url("/")),
                Err(e) => self.store_unavailable(&req, &e),
            },
            _ => answer::not_found(is_browser_navigation(&req), self.lang(&req, None)),
        }
    }

    /// `/.trousseau/auth`: the forward-auth check for nginx `auth_request`, Traefik `ForwardAuth`,
    /// Caddy `forward_auth` and Envoy `ext_authz`. The original request is described by
    /// `X-Forwarded-Method`/`X-Forwarded-Uri` (Traefik, Caddy), `X-Original-Method`/`X-Original-URI`
    /// (nginx) or the path after `/.trousseau/auth` (Envoy's `path_prefix`). The same session,
    /// refresh and route rules apply; the answer is 200 with the identity headers (and
    /// `Set-Cookie` after a refresh), 401/403, or — with `?rd=` or for a Traefik-style browser
    /// navigation — a 302 to sign in.
    async fn forward_auth(&self, req: Request<Incoming>, ctx: &mut RequestCtx) -> Response<Body> {
        let h = req.headers();
        let header_str = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
        let original = match crate::forward_auth::describe(req.method(), req.uri(), h) {
            Ok(original) => original,
            Err(e) => {
                return answer::json(
                    StatusCode::FORBIDDEN,
                    &serde_json::json!({"error": "forbidden", "reason": "ambiguous_request", "error_description": format!("{e}: X-Forwarded-Uri/X-Original-URI, X-Forwarded-Method/X-Original-Method and the path after /.trousseau/auth must agree.")}),
                )
            }
        };
        // The rules judge the path that will be served, as given (policy reads it every way an app
        // might, and an ambiguous one is never public); the sanitized return path is only where to
        // come back to.
        let return_to = safe_return_to(&original.uri);
        let (method, path) = (original.method, original.path);
        let accept_html = header_str("accept").is_some_and(|a| a.contains("text/html") || a.contains("*/*"));
        let navigation = matches!(method, Method::GET | Method::HEAD)
            && accept_html
            && header_str("x-requested-with").is_none()
            && header_str("sec-fetch-mode").is_none_or(|m| m.eq_ignore_ascii_case("navigate"));
        let wants_redirect = query_param(req.uri().query(), "rd").is_some()
            || (navigation && header_str("x-forwarded-uri").is_some());
        let lang = self.lang(&req, None);

        if self.policy.is_public(&path) {
            // Public routes carry no identity, but a gateway copying headers from this answer
            // keeps the client's copy of any it lacks (Envoy's allowed_upstream_headers): name
            // them all, empty, as for a signed-in user without such claims.
            let mut r = answer::text(StatusCode::OK, "");
            let extra = &self.settings.identity.extra_headers;
            identity::name_absent_headers(r.headers_mut(), extra, self.settings.identity.pass_access_token);
            return r;
        }
        let session = match self.load_session(&ctx.cookies).await {
            Ok(Some(session)) => session,
            Ok(None) if wants_redirect => return self.start_login(ctx, return_to, lang),
            Ok(None) => return answer::unauthenticated_json(&self.login_url(&return_to)),
            Err(e) => return self.store_unavailable(&req, &e),
        };
        ctx.sub = Some(session.identity.sub.clone());
        let session = match self.refresh_step(session, ctx).await {
            Ok(session) => session,
            Err(NotServed::Ended) if wants_redirect => return self.start_login(ctx, return_to, lang),
            Err(NotServed::Ended) => return answer::unauthenticated_json(&self.login_url(&return_to)),
            Err(NotServed::IdpUnavailable) => return answer::unavailable(false, lang),
            Err(NotServed::Store(e)) => return self.store_unavailable(&req, &e),
        };
        let lang = self.lang(&req, Some(&session));
        match self.policy.authorize(&session, &method, &path) {
            Decision::Allow => {
                let mut r = answer::text(StatusCode::OK, "");
                let pass_access_token = self.settings.identity.pass_access_token;
                let extra = &self.settings.identity.extra_headers;
                self.assertions.insert_identity_headers(r.headers_mut(), &session, pass_access_token);
                extra.insert(r.headers_mut(), &session);
                // Gateways that copy headers from this answer keep the client's own copy of one
                // the answer lacks (Caddy's copy_headers, Envoy's allowed_upstream_headers): every
                // identity header is named, empty when the user has no such claim.
                identity::name_absent_headers(r.headers_mut(), extra, pass_access_token);
                r
            }
            Decision::ChooseOrganization => answer::choose_organization(wants_redirect, lang, &return_to),
            Decision::Deny(denial) => answer::forbidden(wants_redirect, lang, &denial, &session),
        }
    }

    /// `POST /.trousseau/backchannel-logout`: Trousseau ends a session server-to-server. The
    /// logout token is verified, its `jti` may be used once, and every session of that `sid`
    /// (or `sub`) is no session from its next request on — cookie sessions included. A refusal
    /// is the sender's fault: 400, and a rate-limited WARN line naming the sender's address.
    async fn backchannel_logout(&self, req: Request<Incoming>, ctx: &RequestCtx) -> Response<Body> {
        let bad = |description: &str| {
            self.oidc.logout_refusals().refused(ctx.peer.ip(), &description);
            answer::json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": "invalid_request", "error_description": description}))
        };
        let form = match http_body_util::BodyExt::collect(http_body_util::Limited::new(req.into_body(), 64 * 1024)).await {
            Ok(body) => body.to_bytes(),
            Err(_) => return bad("request body too large or unreadable"),
        };
        let form = String::from_utf8_lossy(&form).into_owned();
        // A duplicated logout_token parameter is refused (query_param returns None).
        let Some(token) = query_param(Some(&form), "logout_token") else {
            return bad("exactly one logout_token parameter is required");
        };
        let logout = match self.oidc.verify_logout_token(&token).await {
            Ok(logout) => logout,
            Err(crate::oidc::LogoutTokenError::Oidc(e)) => {
                // Trousseau's configuration is not loaded yet: ours to fix, and Trousseau may retry.
                tracing::warn!(error = %e, "back-channel logout cannot be verified yet: answering 503");
                return answer::unavailable(false, Lang::En);
            }
            Err(e) => return bad(&e.to_string()),
        };
        match self.revocations.revoke(&logout.jti, logout.sid.as_deref(), logout.sub.as_deref(), now_secs()).await {
            Ok(true) => {}
            Ok(false) => return bad("logout token already used"),
            Err(e) => {
                // Not recorded, so not accepted: Trousseau may send it again.
                tracing::error!(error = %e, "back-channel logout could not be recorded: answering 503");
                return answer::store_unavailable(false, Lang::En);
            }
        }
        if let Some(bearer) = &self.bearer {
            // Also checked on every bearer request; dropping them now frees them at once.
            bearer.forget_sessions(logout.sid.as_deref(), logout.sub.as_deref(), now_secs());
        }
        self.metrics.backchannel_revocation();
        tracing::info!(sid = logout.sid.as_deref().unwrap_or("-"), sub = logout.sub.as_deref().unwrap_or("-"), "back-channel logout: sessions ended");
        answer::json(StatusCode::OK, &serde_json::json!({}))
    }

    /// `GET /.trousseau/organizations`: the organization selector.
    async fn organizations_page(&self, req: &Request<Incoming>, ctx: &mut RequestCtx) -> Response<Body> {
        let browser = is_browser_navigation(req);
        let session = match self.load_session(&ctx.cookies).await {
            Ok(Some(session)) => session,
            Ok(None) => return self.unauthenticated(req, ctx, browser),
            Err(e) => return self.store_unavailable(req, &e),
        };
        ctx.sub = Some(session.identity.sub.clone());
        let lang = self.lang(req, Some(&session));
        let rd = safe_return_to(&query_param(req.uri().query(), "rd").unwrap_or_default());
        let choices: Vec<&crate::identity::Organization> = self.policy.acceptable_organizations(&session).collect();
        if choices.is_empty() {
            return answer::forbidden(browser, lang, &crate::policy::Denial::NoOrganization, &session);
        }
        if !browser {
            return answer::json(
                StatusCode::OK,
                &serde_json::json!({"selected": session.org, "organizations": choices}),
            );
        }
        answer::page(StatusCode::OK, crate::pages::organization_selector(lang, &session, &choices, &rd))
    }

    /// `POST /.trousseau/organizations`: stores the choice in the session and returns to `rd`.
    async fn choose_organization(&self, req: Request<Incoming>, ctx: &mut RequestCtx) -> Response<Body> {
        let lang = self.lang(&req, None);
        // Same-origin forms only (the session cookie is SameSite=Lax too).
        let h = req.headers();
        let same_site_fetch = h.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"same-origin");
        let origin_ok = match h.get(header::ORIGIN) {
            None => h.get("sec-fetch-site").is_none_or(|v| v.as_bytes() == b"same-origin" || v.as_bytes() == b"none"),
            Some(o) if o.as_bytes() == self.settings.public_origin.as_bytes() => true,
            // Browsers send `Origin: null` under a no-referrer policy; Fetch Metadata still tells.
            Some(o) => o.as_bytes() == b"null" && same_site_fetch,
        };
        let mut session = match self.load_session(&ctx.cookies).await {
            Ok(Some(session)) => session,
            Ok(None) => return answer::unauthenticated_json(&self.login_url("/.trousseau/organizations")),
            Err(e) => return self.store_unavailable(&req, &e),
        };
        ctx.sub = Some(session.identity.sub.clone());
        if !origin_ok {
            return answer::json(StatusCode::FORBIDDEN, &serde_json::json!({"error": "cross_origin", "error_description": "The organization choice must come from this site."}));
        }
        let form = match http_body_util::BodyExt::collect(http_body_util::Limited::new(req.into_body(), 16 * 1024)).await {
            Ok(body) => body.to_bytes(),
            Err(_) => return answer::json(StatusCode::PAYLOAD_TOO_LARGE, &serde_json::json!({"error": "too_large"})),
        };
        let form = String::from_utf8_lossy(&form).into_owned();
        let org = query_param(Some(&form), "org").unwrap_or_default();
        let rd = safe_return_to(&query_param(Some(&form), "rd").unwrap_or_default());
        let acceptable = self.policy.acceptable_organizations(&session).any(|o| o.id == org);
        if !acceptable {
            let lang = self.lang_for(Some(&session), lang);
            return answer::forbidden(true, lang, &crate::policy::Denial::OrganizationNotAllowed, &session);
        }
        let session = Arc::make_mut(&mut session);
        session.org = Some(org);
        session.updated_at_ms = now_millis();
        match self.save_session(session, ctx).await {
            Ok(true) => {}
            Ok(false) => return answer::session_too_large(lang),
            Err(e) => {
                tracing::debug!(error = %e, "session store unavailable: answering 503");
                return answer::store_unavailable(true, lang);
            }
        }
        let mut r = answer::redirect(&format!("{}{}", self.settings.public_origin, rd));
        *r.status_mut() = StatusCode::SEE_OTHER;
        r
    }

    fn lang_for(&self, session: Option<&Session>, fallback: Lang) -> Lang {
        session.and_then(|s| s.identity.locale.as_deref()).map(|l| Lang::from_locale(Some(l))).unwrap_or(fallback)
    }

    /// No (valid) session: browsers are sent to sign in, everything else gets 401.
    fn unauthenticated(&self, req: &Request<Incoming>, ctx: &mut RequestCtx, browser: bool) -> Response<Body> {
        let return_to = return_to_of(req);
        if browser {
            self.start_login(ctx, return_to, self.lang(req, None))
        } else {
            answer::unauthenticated_json(&self.login_url(&return_to))
        }
    }

    fn login_url(&self, return_to: &str) -> String {
        format!("/.trousseau/login?rd={}", percent_encoding::utf8_percent_encode(return_to, QUERY_VALUE))
    }

    /// Starts a sign-in: one sealed state cookie for this attempt, then 302 to Trousseau.
    /// `return_to` is made safe here ([`safe_return_to`]: same origin, and short enough for the
    /// state cookie to stay under the browsers' 4 KB).
    fn start_login(&self, ctx: &mut RequestCtx, return_to: String, lang: Lang) -> Response<Body> {
        let (url, login) = match self.oidc.begin_login(safe_return_to(&return_to)) {
            Ok(started) => started,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start sign-in");
                return answer::unavailable(true, lang);
            }
        };
        // Keep at most MAX_LOGIN_ATTEMPTS attempts: drop the oldest (and unreadable ones) first.
        let mut attempts: Vec<(u64, String)> = ctx
            .cookies
            .iter()
            .filter(|(name, _)| name.starts_with(&self.login_cookie_prefix))
            .map(|(name, value)| (self.open_login_state(value).map(|s| s.started_at).unwrap_or(0), name.to_string()))
            .collect();
        attempts.sort();
        let excess = (attempts.len() + 1).saturating_sub(MAX_LOGIN_ATTEMPTS);
        for (_, name) in attempts.into_iter().take(excess) {
            ctx.set_cookies.push(self.cookie_header(&name, "", Duration::ZERO));
        }
        let sealed = self.sealer.seal(LOGIN_STATE_PURPOSE, &serde_json::to_vec(&login).unwrap_or_default());
        let name = self.login_cookie_name(&login.state);
        ctx.set_cookies.push(self.cookie_header(&name, &sealed, LOGIN_STATE_TTL));
        self.metrics.sign_in_started();
        answer::redirect(url.as_str())
    }

    fn login_cookie_name(&self, state: &str) -> String {
        // The state is random base64url; its first 12 characters name the attempt's cookie.
        let id: String = state.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
        format!("{}{}", self.login_cookie_prefix, id)
    }

    fn open_login_state(&self, value: &str) -> Option<LoginState> {
        open_login_state(&self.sealer, value, now_secs())
    }

    /// `/.trousseau/callback`: Trousseau sends the browser back with `code` (or `error`).
    async fn callback(&self, req: &Request<Incoming>, ctx: &mut RequestCtx) -> Response<Body> {
        let query = req.uri().query();
        let lang = self.lang(req, None);
        let state_param = query_param(query, "state").unwrap_or_default();
        let cookie_name = self.login_cookie_name(&state_param);
        let login = ctx
            .cookies
            .get(&cookie_name)
            .and_then(|v| self.open_login_state(v))
            .filter(|l| constant_time_eq(l.state.as_bytes(), state_param.as_bytes()));
        if ctx.cookies.get(&cookie_name).is_some() {
            ctx.set_cookies.push(self.cookie_header(&cookie_name, "", Duration::ZERO));
        }

        if let Some(error) = query_param(query, "error") {
            // Only an answer to a sign-in attempt of this browser is Trousseau speaking; anything
            // else is someone else's link, and its text is not shown (content spoofing).
            let Some(_) = login else {
                return answer::login_expired(lang, &self.login_url("/"));
            };
            let error: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
            let description = query_param(query, "error_description").map(|d| d.chars().take(500).collect::<String>());
            tracing::info!(error = %error, "Trousseau returned an error to the callback");
            return answer::idp_error(lang, &error, description.as_deref());
        }
        let Some(login) = login else {
            return answer::login_expired(lang, &self.login_url("/"));
        };
        let Some(code) = query_param(query, "code") else {
            return answer::login_expired(lang, &self.login_url("/"));
        };
        let tokens = match self.oidc.exchange_code(&code, &login).await {
            Ok(tokens) => tokens,
            Err(e @ (OidcError::Unreachable(_) | OidcError::NotReady)) => {
                tracing::warn!(error = %e, "code exchange failed: identity provider unavailable");
                return answer::unavailable(true, lang);
            }
            Err(e) if e.is_invalid_grant() => {
                // The code was used already — the callback reloaded, or opened twice by a double
                // click while the first was under way — or it expired. Nothing is broken: a
                // browser already signed in goes on, any other starts again.
                tracing::info!("code exchange refused (invalid_grant): a used or expired sign-in code");
                let return_to = safe_return_to(&login.return_to);
                if let Ok(Some(_)) = self.load_session(&ctx.cookies).await {
                    return answer::redirect(&format!("{}{}", self.settings.public_origin, return_to));
                }
                return answer::login_expired(lang, &self.login_url(&return_to));
            }
            Err(e) => {
                tracing::warn!(error = %e, "code exchange failed");
                return answer::sign_in_failed(lang, &e);
            }
        };
        let now = now_secs();
        let mut session = Session {
            id: random_id(),
            identity: tokens.identity,
            org: None,
            sid: tokens.sid,
            created_at: now,
            updated_at_ms: now_millis(),
            expires_at: tokens.expires_at,
            token_lifetime: tokens.expires_at.saturating_sub(now),
            refresh_token: tokens.refresh_token,
            access_token: self.settings.identity.pass_access_token.then_some(tokens.access_token),
            id_token: Some(tokens.id_token),
        };
        session.org = self.policy.auto_select(&session);
        ctx.sub = Some(session.identity.sub.clone());
        tracing::info!(sub = %session.identity.sub, "signed in");
        match self.save_session(&session, ctx).await {
            Ok(true) => {}
            Ok(false) => return answer::session_too_large(lang),
            Err(e) => return self.store_unavailable(req, &e),
        }
        self.metrics.sign_in_completed();
        answer::redirect(&format!("{}{}", self.settings.public_origin, safe_return_to(&login.return_to)))
    }

    /// `/.trousseau/logout`: forget everything here, then end the Trousseau session too.
    async fn logout(&self, req: &Request<Incoming>, ctx: &mut RequestCtx) -> Response<Body> {
        // Sign-out works even when the store is down: the cookies go regardless.
        let session = self.load_session(&ctx.cookies).await.ok().flatten();
        self.end_session(session.as_deref(), ctx).await;
        let login_cookies: Vec<String> = ctx
            .cookies
            .iter()
            .filter(|(n, _)| n.starts_with(&self.login_cookie_prefix))
            .map(|(n, _)| n.to_string())
            .collect();
        for name in login_cookies {
            ctx.set_cookies.push(self.cookie_header(&name, "", Duration::ZERO));
        }
        if let Some(s) = &session {
            ctx.sub = Some(s.identity.sub.clone());
            tracing::info!(sub = %s.identity.sub, "signed out");
        }
        let post_logout = &self.settings.oidc.post_logout_redirect_uri;
        let Some(end_session) = self.oidc.end_session_endpoint() else {
            return answer::redirect(post_logout);
        };
        let Ok(mut url) = url::Url::parse(&end_session) else {
            return answer::redirect(post_logout);
        };
        {
            let mut q = url.query_pairs_mut();
            match session.as_ref().and_then(|s| s.id_token.as_deref()) {
                Some(hint) => q.append_pair("id_token_hint", hint),
                None => q.append_pair("client_id", &self.settings.oidc.client_id),
            };
            q.append_pair("post_logout_redirect_uri", post_logout);
            q.append_pair("state", &random_id());
        }
        let _ = req;
        answer::redirect(url.as_str())
    }

    /// Forgets the session: its cookies (every chunk) and, with a server-side store, its record.
    /// A cookie session cannot be taken back from the browser (or from whoever copied the cookie),
    /// so its id goes into the revocation set for what remains of its lifetime: a copy is no
    /// session afterwards, here at once and on the other replicas (Redis) within
    /// `session.revocation_staleness`.
    async fn end_session(&self, session: Option<&Session>, ctx: &mut RequestCtx) {
        match (&self.store, session) {
            (Some(store), _) => {
                if let Some(handle) = self.session_handle(&ctx.cookies) {
                    if let Err(e) = store.remove(&handle).await {
                        tracing::warn!(error = %e, "could not remove the session record; it expires on its own");
                    }
                }
            }
            (None, Some(session)) => {
                let deadline = session.created_at.saturating_add(self.settings.session.max_lifetime.as_secs());
                let ttl = Duration::from_secs(deadline.saturating_sub(now_secs()).max(1));
                if let Err(e) = self.revocations.end_session(session, ttl).await {
                    // The cookies still go; only a copy taken before would keep working.
                    tracing::warn!(sub = %session.identity.sub, error = %e, "could not record the sign-out in the revocation set: a copy of this cookie stays valid until it expires");
                }
            }
            (None, None) => {}
        }
        ctx.set_cookies.extend(self.codec.clear(&ctx.cookies));
    }

    /// The session of this request: opened from the cookie (or, with a server-side store, looked up
    /// by the handle sealed in the cookie). Anything wrong, revoked or past `max_lifetime` is no
    /// session; a store that cannot answer is an error (the caller fails closed with 503).
    async fn load_session(&self, cookies: &RequestCookies) -> Result<Option<Arc<Session>>, StoreError> {
        let session = match &self.store {
            None => self.codec.load(cookies),
            Some(store) => match self.session_handle(cookies) {
                Some(handle) => store.load(&handle).await?.map(Arc::new),
                None => None,
            },
        };
        let Some(session) = session else { return Ok(None) };
        if self.revocations.is_revoked(&session).await? {
            // A revoked record goes too (best effort): the revocation entry is then not all that
            // keeps it ended.
            if let (Some(store), Some(handle)) = (&self.store, self.session_handle(cookies)) {
                let _ = store.remove(&handle).await;
            }
            return Ok(None);
        }
        let now = now_secs();
        let deadline = session.created_at.saturating_add(self.settings.session.max_lifetime.as_secs());
        Ok((now < deadline && session.created_at <= now + 60).then_some(session))
    }

    /// The store handle sealed in the session cookie (server-side stores only).
    fn session_handle(&self, cookies: &RequestCookies) -> Option<String> {
        let sealed = self.codec.cookie().read_chunked(cookies)?;
        let handle = self.sealer.open(SESSION_HANDLE_PURPOSE, &sealed)?;
        String::from_utf8(handle).ok().filter(|h| h.len() >= 16)
    }

    /// Saves the session and sets its cookie on this response. In the cookie the ID token (kept only
    /// for the logout hint) is dropped when the session would not fit in one cookie; `Ok(false)`
    /// when even that does not fit in the cookie chunks.
    async fn save_session(&self, session: &Session, ctx: &mut RequestCtx) -> Result<bool, StoreError> {
        let now = now_secs();
        let deadline = session.created_at.saturating_add(self.settings.session.max_lifetime.as_secs());
        let max_age = Duration::from_secs(deadline.saturating_sub(now));
        if let Some(store) = &self.store {
            // The handle is the session id: a request carrying it is updating its session; any
            // other save is a sign-in, which counts against the user's cap.
            if self.session_handle(&ctx.cookies).as_deref() == Some(session.id.as_str()) {
                if !store.replace(&session.id, session, max_age).await? {
                    tracing::debug!(sub = %session.identity.sub, "the session ended while this request updated it: not stored again");
                }
            } else {
                store.create(&session.id, session, max_age).await?;
            }
            let sealed = self.sealer.seal(SESSION_HANDLE_PURPOSE, session.id.as_bytes());
            return match self.codec.cookie().write_chunked(&sealed, max_age, &ctx.cookies) {
                Ok(values) => {
                    ctx.set_cookies.extend(values);
                    Ok(true)
                }
                Err(_) => Ok(false),
            };
        }
        let one_cookie = self.codec.cookie().chunk_size;
        let fits = |s: &Session| self.codec.sealed_len(s) <= one_cookie;
        let trimmed;
        let session = if session.id_token.is_some() && !fits(session) {
            trimmed = Session { id_token: None, ..session.clone() };
            &trimmed
        } else {
            session
        };
        match self.codec.store(session, max_age, &ctx.cookies) {
            Ok(values) => {
                ctx.set_cookies.extend(values);
                Ok(true)
            }
            Err(e) => {
                tracing::error!(sub = %session.identity.sub, error = %e, "session does not fit in cookies; set session.store: memory");
                Ok(false)
            }
        }
    }

    /// 503 when the session store cannot answer: never let a request through unchecked. Not
    /// logged per request: the store logs once when it goes down and once when it is back.
    fn store_unavailable(&self, req: &Request<Incoming>, e: &StoreError) -> Response<Body> {
        tracing::debug!(error = %e, "session store unavailable: answering 503");
        answer::store_unavailable(is_browser_navigation(req), self.lang(req, None))
    }

    fn is_our_cookie(&self, name: &str) -> bool {
        self.codec.cookie().is_ours(name) || name.starts_with(&self.login_cookie_prefix)
    }

    /// Removes the app's `Set-Cookie` fields that would write one of our cookies: the app must not
    /// plant a session (fixation), clear one, or fill the browser with fake sign-in attempts. Any
    /// case and either `__Host-`/`__Secure-` prefix count, as browsers apply prefixes without
    /// regard to case.
    fn drop_app_cookies_of_ours(&self, headers: &mut http::HeaderMap) {
        if !headers.contains_key(header::SET_COOKIE) {
            return;
        }
        let base = self.settings.session.cookie_name.as_bytes();
        let ours = |value: &HeaderValue| {
            let name = value.as_bytes().split(|&b| b == b'=').next().unwrap_or_default().trim_ascii();
            let name = [b"__host-".as_slice(), b"__secure-"]
                .iter()
                .find(|prefix| name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix))
                .map_or(name, |prefix| &name[prefix.len()..]);
            name.len() >= base.len() && name[..base.len()].eq_ignore_ascii_case(base)
        };
        if !headers.get_all(header::SET_COOKIE).iter().any(ours) {
            return;
        }
        let kept: Vec<HeaderValue> = headers.get_all(header::SET_COOKIE).iter().filter(|v| !ours(v)).cloned().collect();
        tracing::warn!("the app tried to set a cookie named like the proxy's own: dropped");
        headers.remove(header::SET_COOKIE);
        for value in kept {
            headers.append(header::SET_COOKIE, value);
        }
    }

    fn cookie_header(&self, name: &str, value: &str, max_age: Duration) -> HeaderValue {
        let mut c = cookie::Cookie::build((name.to_string(), value.to_string()))
            .path("/")
            .http_only(true)
            .secure(self.settings.secure_cookies)
            .same_site(cookie::SameSite::Lax)
            .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64))
            .build();
        if max_age.is_zero() {
            c.make_removal();
            c.set_path("/");
        }
        HeaderValue::from_str(&c.to_string()).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
    }

    fn lang(&self, req: &Request<Incoming>, session: Option<&Session>) -> Lang {
        self.lang_of(req.headers().get(header::ACCEPT_LANGUAGE), session)
    }

    /// The session's locale, else the browser's `Accept-Language`.
    fn lang_of(&self, accept_language: Option<&HeaderValue>, session: Option<&Session>) -> Lang {
        match session.and_then(|s| s.identity.locale.as_deref()) {
            Some(locale) => Lang::from_locale(Some(locale)),
            None => Lang::from_accept_language(accept_language.and_then(|v| v.to_str().ok())),
        }
    }
}

/// Why the refresh step left no session to serve with.
enum NotServed {
    /// The grant is over (`invalid_grant`, or expired without a refresh token): sign in again.
    Ended,
    /// Trousseau is unreachable and the grace period is over.
    IdpUnavailable,
    /// The session store could not save the refreshed session or coordinate the refresh.
    Store(StoreError),
}

/// What one request accumulates on its way through [`App::handle`].
struct RequestCtx {
    cookies: RequestCookies,
    set_cookies: Vec<HeaderValue>,
    sub: Option<String>,
    peer: SocketAddr,
    request_id: HeaderValue,
    /// Who answered, for the request's metrics outcome.
    answered_by: AnsweredBy,
}

/// Keeps a sane client `X-Request-Id` or makes one.
fn request_id(req: &mut Request<Incoming>) -> HeaderValue {
    if let Some(v) = req.headers().get(&X_REQUEST_ID) {
        let ok = v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b));
        if ok && !v.is_empty() {
            return v.clone();
        }
    }
    new_request_id()
}

/// A fresh request id: 128 bits, base64url — 64 random bits drawn once per process, then a counter.
/// Unique, not secret (it is echoed to the client and logged), so it needs no randomness per request.
/// Performance: drawing 16 random bytes per request (`random_id`) was ~2% of a proxied request.
fn new_request_id() -> HeaderValue {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(crate::util::id::random_bytes::<8>);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(prefix);
    id[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let mut text = [0u8; 22];
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(id, &mut text) {
        Ok(len) => HeaderValue::from_bytes(&text[..len]).unwrap_or_else(|_| HeaderValue::from_static("-")),
        Err(_) => HeaderValue::from_static("-"),
    }
}

/// mod_auth_openidc's rule: only a top-level browser navigation is sent to sign in; XHR, fetch,
/// API clients and non-GET requests get a 401 instead of a redirect (no state-cookie pile-up).
pub fn is_browser_navigation<B>(req: &Request<B>) -> bool {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return false;
    }
    // Performance: header names as constants, not strings parsed on every lookup.
    static X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
    static SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
    static SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");
    let h = req.headers();
    let get = |name: &HeaderName| h.get(name).and_then(|v| v.to_str().ok());
    if get(&X_REQUESTED_WITH).is_some_and(|v| v.eq_ignore_ascii_case("XMLHttpRequest")) {
        return false;
    }
    if get(&SEC_FETCH_MODE).is_some_and(|v| !v.eq_ignore_ascii_case("navigate")) {
        return false;
    }
    if get(&SEC_FETCH_DEST).is_some_and(|v| !v.eq_ignore_ascii_case("document")) {
        return false;
    }
    match get(&header::ACCEPT) {
        Some(accept) => accept.split(',').any(|part| {
            let media = part.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("text/html") || media.eq_ignore_ascii_case("application/xhtml+xml") || media == "*/*"
        }),
        None => false,
    }
}

/// The path and query to come back to after sign-in.
fn return_to_of<B>(req: &Request<B>) -> String {
    req.uri().path_and_query().map(|pq| pq.as_str().to_string()).unwrap_or_else(|| "/".into())
}

/// Keeps `rd` only if it is a same-origin relative path; anything else becomes `/`.
///
/// Browsers forgive a lot (`\` as `/`, tabs and newlines dropped, `//host` as another origin), so
/// anything with a backslash, a control character or whitespace is refused outright, the rest is
/// resolved as a URL against a dummy origin exactly like a browser would, and the result must stay
/// on that origin with a path that does not start with `//`.
///
/// A return path longer than [`MAX_RETURN_TO`] loses its query, and becomes `/` if even its path is
/// that long: it travels in the sign-in state cookie, which must stay under the browsers' 4 KB.
pub fn safe_return_to(rd: &str) -> String {
    const BASE: &str = "https://return-to.invalid/";
    if !rd.starts_with('/')
        || rd.starts_with("//")
        || rd.len() > 4 * MAX_RETURN_TO
        || rd.bytes().any(|b| b == b'\\' || b.is_ascii_control() || b == b' ' || b >= 0x80)
    {
        return "/".into();
    }
    let Ok(base) = url::Url::parse(BASE) else { return "/".into() };
    let Ok(resolved) = base.join(rd) else { return "/".into() };
    if resolved.origin() != base.origin() || resolved.path().starts_with("//") {
        return "/".into();
    }
    let mut out = resolved.path().to_string();
    if out.len() > MAX_RETURN_TO {
        return "/".into();
    }
    if let Some(q) = resolved.query().filter(|q| out.len() + 1 + q.len() <= MAX_RETURN_TO) {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The longest return path kept through sign-in, in bytes (see [`safe_return_to`]).
pub const MAX_RETURN_TO: usize = 1024;

/// The sign-in attempt a state cookie value holds, if it opens and has not expired at `now`.
/// Public for the fuzz targets ([`crate::fuzz`]).
#[doc(hidden)]
pub fn open_login_state(sealer: &Sealer, value: &str, now: u64) -> Option<LoginState> {
    let plain = sealer.open(LOGIN_STATE_PURPOSE, value)?;
    let state: LoginState = serde_json::from_slice(&plain).ok()?;
    // Unexpired, and not started later than now (a minute of clock skew between replicas).
    let fresh = state.started_at.saturating_add(LOGIN_STATE_TTL.as_secs()) >= now
        && state.started_at <= now.saturating_add(60);
    fresh.then_some(state)
}

/// One query parameter, percent-decoded. A parameter given twice is refused (None). Public for
/// the fuzz targets ([`crate::fuzz`]).
#[doc(hidden)]
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let mut found = None;
    for (k, v) in url::form_urlencoded::parse(query?.as_bytes()) {
        if k == name {
            if found.is_some() {
                return None;
            }
            found = Some(v.into_owned());
        }
    }
    found
}

/// Characters escaped in a query value we build.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

use crate::util::constant_time_eq;
use crate::util::id::random_id;

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish for at most `drain`. Connections and requests are held to
/// `limits:` ([`crate::limits`]): a request beyond a cap is answered at once (429/503), never
/// queued — except the health probes, which an overloaded proxy still answers.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    serve_as_worker(listener, app, shutdown, drain, None).await;
}

/// [`serve`] as one of several workers sharing `listener`, which spread its connections evenly
/// ([`crate::limits::balance`]).
async fn serve_as_worker(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    worker: Option<Worker>,
) {
    let limits = Arc::clone(&app.limits);
    let handler = move |mut req: Request<Incoming>, conn: &Arc<Connection>| {
        let app = Arc::clone(&app);
        let peer = conn.peer();
        let mut flight = InFlight::begin(conn, &req);
        let admitted = if is_health_probe(&req) { Ok(()) } else { flight.admit(&req) };
        if req.headers().contains_key(header::UPGRADE) {
            req.extensions_mut().insert(flight.upgrade_hold());
        }
        async move {
            let response = match admitted {
                Err(refusal) => app.refuse(&req, peer, refusal),
                // Boxed: the request path's future is large (~19 KB in a debug build). Inline, every
                // HTTP/2 stream's task and every connection's task would keep that much for as long
                // as it lives, long after the response head went out (1,744 HTTP/2 streams left
                // unread held ~80 MB); boxed, it is freed as soon as the response exists.
                Ok(()) => Box::pin(app.handle(req, peer)).await,
            };
            response.map(|body| flight.respond(body))
        }
    };
    serve_connections(listener, limits, ListenerKind::Main, handler, shutdown, drain, worker).await;
}

/// `/.trousseau/healthz` and `/.trousseau/readyz`: outside the request caps (answered at once, they
/// hold nothing), so a kubelet does not restart a proxy that is only busy.
fn is_health_probe<B>(req: &Request<B>) -> bool {
    matches!(req.uri().path(), "/.trousseau/healthz" | "/.trousseau/readyz")
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Answers the proxy makes itself: pages for browsers, JSON for everything else.
pub mod answer {
    use super::*;
    use crate::pages;
    use crate::policy::Denial;

    fn with_security_headers(mut r: Response<Body>) -> Response<Body> {
        let h = r.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        r
    }

    /// A plain-text answer.
    pub fn text(status: StatusCode, text: &'static str) -> Response<Body> {
        let mut r = Response::new(body::full(text));
        *r.status_mut() = status;
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        with_security_headers(r)
    }

    /// A JSON answer.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
        let mut r = Response::new(body::full(serde_json::to_vec(value).unwrap_or_default()));
        *r.status_mut() = status;
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        with_security_headers(r)
    }

    /// An HTML page.
    pub fn page(status: StatusCode, html: String) -> Response<Body> {
        let mut r = Response::new(body::full(html));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
        );
        with_security_headers(r)
    }

    /// 302 to `location`.
    pub fn redirect(location: &str) -> Response<Body> {
        let mut r = Response::new(body::empty());
        *r.status_mut() = StatusCode::FOUND;
        if let Ok(v) = HeaderValue::from_str(location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        with_security_headers(r)
    }

    /// The public keys of our assertions.
    pub fn jwks(json: bytes::Bytes) -> Response<Body> {
        let mut r = Response::new(body::full(json));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
        r
    }

    /// 401 for API clients, pointing at where a browser would sign in.
    pub fn unauthenticated_json(login_url: &str) -> Response<Body> {
        let mut r = json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({
                "error": "unauthenticated",
                "error_description": "No valid Trousseau session. Sign in with a browser at login_url, or send the session cookie.",
                "login_url": login_url,
            }),
        );
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"trousseau-proxy\""));
        r
    }

    /// 401 for a bearer token Trousseau does not accept (RFC 6750).
    pub fn invalid_bearer() -> Response<Body> {
        let mut r = json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "invalid_token", "error_description": "The access token is not valid (expired, revoked or not issued by Trousseau)."}),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"trousseau-proxy\", error=\"invalid_token\""),
        );
        r
    }

    /// The session's identity and selected organization — never tokens.
    pub fn userinfo(session: &Session) -> Response<Body> {
        let mut value = serde_json::to_value(&session.identity).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("organization".into(), serde_json::to_value(session.selected_organization()).unwrap_or_default());
        }
        json(StatusCode::OK, &value)
    }

    /// 503: Trousseau is needed and cannot be reached.
    pub fn unavailable(browser: bool, lang: Lang) -> Response<Body> {
        let mut r = if browser {
            page(StatusCode::SERVICE_UNAVAILABLE, pages::unavailable(lang))
        } else {
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "identity_provider_unavailable", "error_description": "Trousseau cannot be reached right now; retry shortly."}),
            )
        };
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        r
    }

    /// 503: the session store cannot answer.
    pub fn store_unavailable(browser: bool, lang: Lang) -> Response<Body> {
        let mut r = if browser {
            let title = lang.pick("Sessions are temporarily unavailable", "Les sessions sont momentanément indisponibles");
            let text = lang.pick(
                "The proxy cannot reach its session store right now, so it cannot check who you are. Nothing is lost: try again in a few seconds.",
                "Le proxy ne joint pas son stockage de sessions pour le moment et ne peut donc pas vérifier qui vous êtes. Rien n'est perdu : réessayez dans quelques secondes.",
            );
            let html = format!("<h1>{}</h1><p>{}</p><div class=\"actions\"><a class=\"button\" href=\"/\">{}</a></div>", pages::escape(title), pages::escape(text), pages::escape(lang.pick("Try again", "Réessayer")));
            page(StatusCode::SERVICE_UNAVAILABLE, pages::layout(lang, title, &html))
        } else {
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "session_store_unavailable", "error_description": "The session store cannot be reached right now; retry shortly."}),
            )
        };
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        r
    }

    /// 429 (this client) or 503 (everyone): too many requests in flight. Never queued: the
    /// client retries after `Retry-After`.
    pub fn over_limit(browser: bool, lang: Lang, refusal: Refusal) -> Response<Body> {
        let (status, error, retry_after, title, text) = match refusal {
            Refusal::PerClient => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "2",
                ("Too many requests at once", "Trop de requêtes à la fois"),
                (
                    "Your address has too many requests in progress with this application. Wait a moment, then try again.",
                    "Votre adresse a trop de requêtes en cours avec cette application. Patientez un instant, puis réessayez.",
                ),
            ),
            Refusal::InFlight => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "5",
                ("The application is very busy", "L'application est très sollicitée"),
                (
                    "Too many requests are in progress right now. Nothing is lost: try again in a few seconds.",
                    "Trop de requêtes sont en cours pour le moment. Rien n'est perdu : réessayez dans quelques secondes.",
                ),
            ),
        };
        let mut r = if browser {
            let (title, text) = (lang.pick(title.0, title.1), lang.pick(text.0, text.1));
            let html = format!(
                "<h1>{}</h1><p>{}</p><div class=\"actions\"><a class=\"button\" href=\"/\">{}</a></div>",
                pages::escape(title),
                pages::escape(text),
                pages::escape(lang.pick("Try again", "Réessayer"))
            );
            page(status, pages::layout(lang, title, &html))
        } else {
            json(status, &serde_json::json!({"error": error, "error_description": text.0}))
        };
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
        r
    }

    /// 502/504: the app behind the proxy did not answer; 400/408 when the client's request body
    /// was at fault.
    pub fn upstream_failed(browser: bool, lang: Lang, e: &ProxyError) -> Response<Body> {
        let status = match e {
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::InvalidRequest(_) => {
                return json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": "bad_request", "error_description": "This request cannot be forwarded (e.g. an asterisk-form or CONNECT request)."}));
            }
            ProxyError::ClientBody(_) => {
                return json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": "bad_request", "error_description": "The request body could not be read: it was malformed or cut off."}));
            }
            ProxyError::SlowClientBody => {
                return json(StatusCode::REQUEST_TIMEOUT, &serde_json::json!({"error": "request_timeout", "error_description": "The request body arrived too slowly."}));
            }
            _ => StatusCode::BAD_GATEWAY,
        };
        if browser {
            page(status, pages::upstream_failed(lang, status))
        } else {
            json(status, &serde_json::json!({"error": "upstream_unavailable", "error_description": "The application behind the proxy did not answer."}))
        }
    }

    /// 403 for a policy denial.
    pub fn forbidden(browser: bool, lang: Lang, denial: &Denial, session: &Session) -> Response<Body> {
        if browser {
            page(StatusCode::FORBIDDEN, pages::forbidden(lang, denial, session))
        } else {
            json(
                StatusCode::FORBIDDEN,
                &serde_json::json!({"error": "forbidden", "reason": denial.code(), "error_description": pages::denial_text(Lang::En, denial)}),
            )
        }
    }

    /// The user must pick an organization first.
    pub fn choose_organization(browser: bool, _lang: Lang, return_to: &str) -> Response<Body> {
        let url = format!(
            "/.trousseau/organizations?rd={}",
            percent_encoding::utf8_percent_encode(return_to, QUERY_VALUE)
        );
        if browser {
            redirect(&url)
        } else {
            json(
                StatusCode::FORBIDDEN,
                &serde_json::json!({"error": "organization_required", "error_description": "Select an organization first.", "select_url": url}),
            )
        }
    }

    /// Trousseau answered the callback with an error (`access_denied`, …): no redirect loop.
    pub fn idp_error(lang: Lang, error: &str, description: Option<&str>) -> Response<Body> {
        let status = if error == "access_denied" { StatusCode::FORBIDDEN } else { StatusCode::BAD_REQUEST };
        page(status, pages::idp_error(lang, error, description))
    }

    /// The callback has no matching sign-in attempt (expired, other browser, replayed).
    pub fn login_expired(lang: Lang, start_again: &str) -> Response<Body> {
        page(StatusCode::BAD_REQUEST, pages::login_expired(lang, start_again))
    }

    /// The code exchange or the ID token failed.
    pub fn sign_in_failed(lang: Lang, e: &OidcError) -> Response<Body> {
        page(StatusCode::BAD_GATEWAY, pages::sign_in_failed(lang, e))
    }

    /// The session cannot be stored in cookies.
    pub fn session_too_large(lang: Lang) -> Response<Body> {
        page(StatusCode::INTERNAL_SERVER_ERROR, pages::session_too_large(lang))
    }

    /// Unknown reserved path.
    pub fn not_found(browser: bool, lang: Lang) -> Response<Body> {
        if browser {
            page(StatusCode::NOT_FOUND, pages::not_found(lang))
        } else {
            json(StatusCode::NOT_FOUND, &serde_json::json!({"error": "not_found"}))
        }
    }
}

/// Binds the listener and serves until SIGTERM/SIGINT; discovery runs in the background and
/// readiness follows it.
pub async fn run(mut settings: Settings, devidp: Option<Arc<DevIdp>>) -> Result<(), StartError> {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    crate::limits::fit_open_file_limit(&mut settings.limits, workers, POOL_MAX_IDLE_PER_WORKER);
    let addr = settings.listen;
    let drain = settings.proxy.drain_timeout.0;
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let listener = listener.into_std().map_err(|source| StartError::Bind { addr, source })?;
    let metrics_listener = match settings.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?),
        None => None,
    };
    let app = App::new(settings, devidp)?;
    let oidc = app.oidc().clone();
    tokio::spawn(async move { oidc.discover_until_ready().await });
    if let Some(redis) = app.redis.clone() {
        // Says at once (in the log) whether Redis is reachable; requests reconnect on their own.
        tokio::spawn(async move { redis.ping().await });
    }
    if let Some(listener) = metrics_listener {
        let metrics_app = app.clone();
        tracing::info!(listen = ?listener.local_addr().ok(), "metrics at /metrics");
        let limits = Arc::clone(&app.limits);
        tokio::spawn(crate::metrics::serve_metrics(listener, move || metrics_app.metrics_text(), limits, std::future::pending()));
    }
    tracing::info!(listen = %addr, public_url = %app.settings().public_origin, upstream = %app.settings().upstream, "trousseau-proxy listening");
    serve_on_workers(listener, app, drain).await.map_err(|source| StartError::Bind { addr, source })
}

/// Serves `listener` with one single-threaded runtime per core until SIGTERM/SIGINT, then drains.
///
/// Thread per core: every worker accepts on the same listening socket (whoever is free takes the
/// next connection; one that holds more than its share hands it to the least loaded, see
/// [`crate::limits::balance`]) and runs each connection, its requests and its upstream connections (one
/// pool per worker, [`crate::proxy::set_worker`]) on its own thread. A request never hops
/// between threads, which a work-stealing runtime makes it do — and every hop is a futex wake
/// and a context switch, more than the request's own work on a small machine. The runtime that
/// called this (from `main`) only waits for the signal and runs background tasks.
async fn serve_on_workers(listener: std::net::TcpListener, app: Arc<App>, drain: Duration) -> std::io::Result<()> {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut threads = Vec::with_capacity(workers);
    let (balance, worker_sides) = Balance::new(workers);
    app.limits.set_balance(balance);
    for (index, worker) in worker_sides.into_iter().enumerate() {
        let listener = listener.try_clone()?;
        let (app, mut stopped) = (app.clone(), stopped.clone());
        let thread = std::thread::Builder::new().name(format!("trousseau-worker-{index}")).spawn(move || {
            crate::logging::buffer_this_thread();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(crate::logging::flush_this_thread)
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return tracing::error!(error = %e, worker = index, "cannot start a worker runtime"),
            };
            crate::proxy::set_worker(index);
            runtime.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => return tracing::error!(error = %e, worker = index, "cannot listen"),
                };
                let shutdown = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                tokio::spawn(timer_heartbeat());
                serve_as_worker(listener, app, shutdown, drain, Some(worker)).await;
            });
        })?;
        threads.push(thread);
    }
    drop(listener);
    shutdown_signal().await;
    let _ = stop.send(true);
    tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await
    .ok();
    Ok(())
}

/// Keeps a deadline at most [`HEARTBEAT`] away in a worker's timer wheel, forever.
///
/// Every request arms timers (hyper's header-read timeout, our response timeout). When tokio's
/// timer driver went to sleep knowing no deadline at all — every connection idle between two
/// requests — the first new timer made it wake its own thread: an eventfd write, then an extra
/// `epoll_wait` round, for about one request in four under load. With a near deadline always known,
/// a new 30-second timer is never the earliest and the driver is left alone. Costs ten wake-ups a
/// second per worker. It also writes the worker's buffered log lines ([`crate::logging`]).
async fn timer_heartbeat() {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A worker that never runs out of work never parks: its access lines go out from here.
        crate::logging::flush_this_thread();
    }
}

/// See [`timer_heartbeat`].
const HEARTBEAT: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_keeps_same_origin_paths_only() {
        assert_eq!(safe_return_to("/a/b?c=d"), "/a/b?c=d");
        for bad in [
            "//evil.com", "/\\evil.com", "https://evil.com", "/\t/evil.com", "\\/evil.com", "/.//evil.com",
            "evil.com", "", "/%0a/evil", "javascript:alert(1)", "/\u{3002}evil",
        ] {
            let out = safe_return_to(bad);
            assert!(out.starts_with('/') && !out.starts_with("//"), "{bad:?} -> {out}");
            assert!(!out.contains("evil.com") || out.starts_with("/%"), "{bad:?} -> {out}");
        }
    }

    #[test]
    fn browser_detection_follows_fetch_metadata() {
        let req = |pairs: &[(&str, &str)], method: Method| {
            let mut b = Request::builder().method(method).uri("/");
            for (k, v) in pairs {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap()
        };
        assert!(is_browser_navigation(&req(&[("accept", "text/html,application/xhtml+xml")], Method::GET)));
        assert!(!is_browser_navigation(&req(&[("accept", "text/html")], Method::POST)));
        assert!(!is_browser_navigation(&req(&[("accept", "application/json")], Method::GET)));
        assert!(!is_browser_navigation(&req(&[("accept", "*/*"), ("sec-fetch-mode", "cors")], Method::GET)));
        assert!(!is_browser_navigation(&req(&[("accept", "text/html"), ("x-requested-with", "XMLHttpRequest")], Method::GET)));
        assert!(!is_browser_navigation(&req(&[], Method::GET)));
    }

    #[test]
    fn duplicated_query_parameters_are_refused() {
        assert_eq!(query_param(Some("state=a&code=b"), "state").as_deref(), Some("a"));
        assert_eq!(query_param(Some("state=a&state=b"), "state"), None);
    }
}
