//! `/.trousseau/auth`: the forward-auth check for nginx `auth_request`, Traefik `ForwardAuth`,
//! Caddy `forward_auth` and Envoy `ext_authz`. Which request is asked about comes from
//! [`crate::forward_auth::describe`]; the same session, refresh and route rules as the request path
//! apply. The answer is 200 with the identity headers (and `Set-Cookie` after a refresh), 401/403,
//! or — with `?rd=` or for a Traefik-style browser navigation — a 302 to sign in.
//!
//! [`judge`] is the decision itself, for this endpoint and for Envoy's gRPC form
//! ([`crate::grpc_authz`], through `App::check_external`): one function, whichever way the
//! gateway asks.

use http::{Method, Request, Response, StatusCode};

use super::super::refresh::{refresh, NotServed};
use super::super::{authenticate, lang, Answer, RequestCtx};
use crate::answer;
use crate::app::App;
use crate::body::Body;
use crate::forward_auth::{Narrowing, OriginalRequest, AUTH_PATH};
use crate::identity;
use crate::policy::Decision;
use crate::request::{is_navigation, is_preflight, login_url, query_param, safe_return_to};

/// A request a gateway asks about, described: what [`judge`] decides on.
pub(crate) struct Asked {
    /// Its method.
    pub(crate) method: Method,
    /// Its path alone: what the rules judge, as given.
    pub(crate) path: String,
    /// Where to come back to after signing in (its path and query, made safe).
    pub(crate) return_to: String,
    /// A refusal for want of a session is a 302 to sign in rather than a 401: the gateway hands
    /// the answer to a browser as it is.
    pub(crate) wants_redirect: bool,
    /// What the gateway asks of this route beyond the configuration.
    pub(crate) narrowing: Narrowing,
}

impl Asked {
    /// `original` as asked about, with a redirect to sign in or not, and its narrowing.
    pub(crate) fn new(original: OriginalRequest, wants_redirect: bool, narrowing: Narrowing) -> Asked {
        // The rules judge the path that will be served, as given (policy reads it every way an
        // app might, and an ambiguous one is never public); the sanitized return path is only
        // where to come back to.
        Asked { return_to: safe_return_to(&original.uri), method: original.method, path: original.path, wants_redirect, narrowing }
    }
}

/// Judges the request a gateway asks about in this request's headers (or path).
pub(super) async fn check<B>(app: &App, req: &Request<B>, ctx: &mut RequestCtx) -> Result<Response<Body>, Answer> {
    let h = req.headers();
    let original = crate::forward_auth::describe(req.method(), req.uri(), h).map_err(|e| {
        answer::json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({"error": "forbidden", "reason": "ambiguous_request", "error_description": format!("{e}: X-Forwarded-Uri/X-Original-URI, X-Forwarded-Method/X-Original-Method and the path after /.trousseau/auth must agree.")}),
        )
    })?;
    // The same browser rule as the request path, about the described method; a gateway that
    // describes the request Traefik's way (`X-Forwarded-Uri`) also sends the browser on.
    let navigation = is_navigation(&original.method, h) && h.get("x-forwarded-uri").is_some_and(|v| !v.is_empty());
    let wants_redirect = query_param(req.uri().query(), "rd").is_some() || navigation;
    // Narrowing only from a query the gateway owns: its auth URL is exactly ours (nginx's
    // `proxy_pass`, Traefik's `address`). Envoy's form appends the original path to ours and
    // passes the original query on — the client's, and the app's parameters — so there it is
    // never read (Envoy narrows per route through gRPC's `context_extensions`).
    let narrowing = if req.uri().path() == AUTH_PATH { Narrowing::from_query(req.uri().query()) } else { Narrowing::default() };
    judge(app, req, &Asked::new(original, wants_redirect, narrowing), ctx).await
}

/// The decision about `asked`, for every form of the check: 200 with the identity headers (every
/// one named, empty when absent), or the refusal — sign in, 401, 403, 503 — as the request path
/// would give it. `req` is the request that carried the question (its cookies are in `ctx`).
pub(crate) async fn judge<B>(app: &App, req: &Request<B>, asked: &Asked, ctx: &mut RequestCtx) -> Result<Response<Body>, Answer> {
    let h = req.headers();
    let (method, path, return_to) = (&asked.method, asked.path.as_str(), asked.return_to.as_str());
    let lang = lang(h, None);
    let pass_access_token = app.settings.identity.pass_access_token;
    let extra = &app.settings.identity.extra_headers;

    // A CORS preflight the configuration lets through (`cors.preflight: pass`): as public. A
    // route the gateway narrows needs a session even there: its narrowing names who may pass.
    let preflight = is_preflight(method, h, ctx.jar.incoming.iter().next().is_some())
        && app.policy.preflight_passes(path, app.settings.cors.preflight_pass);
    if asked.narrowing.is_empty() && (preflight || app.policy.is_public(path)) {
        // Public routes carry no identity, but a gateway copying headers from this answer
        // keeps the client's copy of any it lacks (Envoy's allowed_upstream_headers): name
        // them all, empty, as for a signed-in user without such claims.
        let mut r = answer::text(StatusCode::OK, "");
        identity::name_absent_headers(r.headers_mut(), extra, pass_access_token);
        return Ok(r);
    }
    let no_session = |ctx: &mut RequestCtx| {
        if asked.wants_redirect {
            super::login::start(app, ctx, return_to, lang)
        } else {
            answer::unauthenticated_json(&login_url(return_to))
        }
    };
    let Some(session) = authenticate::session(app, req, ctx).await? else {
        return Err(no_session(ctx));
    };
    let session = match refresh(app, session, ctx).await {
        Ok(session) => session,
        Err(NotServed::Ended) => return Err(no_session(ctx)),
        Err(NotServed::IdpUnavailable) => return Err(answer::unavailable(false, lang)),
        Err(NotServed::Store(e)) => return Err(authenticate::store_unavailable(req, &e)),
    };
    let lang = super::super::lang(h, Some(&session));
    match app.policy.authorize_narrowed(&session, method, path, &asked.narrowing) {
        Decision::Allow => {
            let mut r = answer::text(StatusCode::OK, "");
            app.assertions.insert_identity_headers(r.headers_mut(), &session, pass_access_token);
            extra.insert(r.headers_mut(), &session);
            // Gateways that copy headers from this answer keep the client's own copy of one
            // the answer lacks (Caddy's copy_headers, Envoy's allowed_upstream_headers): every
            // identity header is named, empty when the user has no such claim.
            identity::name_absent_headers(r.headers_mut(), extra, pass_access_token);
            Ok(r)
        }
        Decision::ChooseOrganization => Err(answer::choose_organization(asked.wants_redirect, lang, return_to)),
        Decision::Deny(denial) => {
            if app.policy.authorize(&session, method, path) == Decision::Allow {
                super::super::authorize::audit_narrowing_denial(ctx, method, path, &denial);
            } else {
                super::super::authorize::audit_denial(app, ctx, &session, method, path, &denial);
            }
            Err(answer::forbidden(asked.wants_redirect, lang, &denial, &session))
        }
    }
}
