//! Phase 3: who is asking. A Trousseau access token from an API client (`api.bearer: userinfo`,
//! and no session cookie beside it), else the session cookie. Every endpoint that needs the
//! session reads it through [`session`], so a store that cannot answer, a revoked session and
//! the access line's `sub` are handled the same way everywhere.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, StatusCode};

use super::{lang, Answer, RequestCtx};
use crate::answer;
use crate::app::App;
use crate::bearer::{BearerAuth, BearerOutcome};
use crate::request::is_browser_navigation;
use crate::session::store::StoreError;
use crate::oidc::OidcError;
use crate::session::Session;
use crate::util::clock::now_secs;

/// The session of a request to a protected route, or the answer without one: sign in (browser
/// navigation) or 401, 503 when the store cannot say. May change: `ctx` (`sub`, `via_bearer`).
pub(super) async fn authenticate<B>(app: &App, req: &Request<B>, ctx: &mut RequestCtx, browser: bool) -> Result<Arc<Session>, Answer> {
    // The rarer paths are boxed — an API client's token check, the way to sign in, the
    // organizations fetched back — so that their futures (calls to Trousseau) do not size the
    // future of every request, which hyper moves into place once per request.
    if let Some((bearer, token)) = bearer_token(app, req, ctx) {
        // The token's check is a span of its own: Trousseau's userinfo call hangs from it.
        let check = ctx.trace.child("introspection", crate::trace::record::SpanKind::Internal);
        let span = ctx.trace.span_of(check.as_ref());
        let session = Box::pin(crate::trace::within(span, bearer_session(app, bearer, token, req, ctx))).await;
        drop(check);
        let session = session?;
        ctx.via_bearer = true;
        ctx.trace.note_session("bearer");
        return Ok(Arc::new(session));
    }
    match session(app, req, ctx).await? {
        Some(session) => Ok(session),
        None => Err(Box::pin(super::endpoints::login::unauthenticated(app, req, ctx, browser)).await),
    }
}

/// The session the request's cookie holds, if any; `Err` is the 503 for a store that cannot
/// answer. Sets `ctx.sub`.
pub(crate) async fn session<B>(app: &App, req: &Request<B>, ctx: &mut RequestCtx) -> Result<Option<Arc<Session>>, Answer> {
    match app.sessions.load(&ctx.jar.incoming).await {
        Ok(Some(session)) => {
            ctx.sub = Some(session.identity.sub.clone());
            ctx.trace.note_session("valid");
            if session.organizations_aside.is_none() || session.identity.organizations.is_some() {
                return Ok(Some(session));
            }
            let span = ctx.trace.span;
            Ok(Some(Box::pin(crate::trace::within(span, with_organizations(app, req, ctx, session))).await?))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(store_unavailable(req, &e)),
    }
}

/// A cookie session whose organizations were set aside (they did not fit its cookie budget,
/// [`crate::session::sessions::COOKIE_BUDGET`]) and that this replica does not have
/// ([`crate::session::sessions::Sessions::load`] fills them in when it does) gets them back from
/// Trousseau: its userinfo endpoint with the session's access token, or a refresh when that token
/// has expired (the new ID token carries them). Fails closed: no session when Trousseau refuses
/// the token or answers for another user, 503 when it cannot say.
async fn with_organizations<B>(app: &App, req: &Request<B>, ctx: &mut RequestCtx, session: Arc<Session>) -> Result<Arc<Session>, Answer> {
    let Some(digest) = session.organizations_aside.clone() else { return Ok(session) };
    if session.identity.organizations.is_some() {
        return Ok(session);
    }
    let browser = is_browser_navigation(req);
    let refreshed = session.expires_at <= now_secs();
    let session = if refreshed {
        match super::refresh::refresh(app, session, ctx).await {
            Ok(session) => session,
            Err(e) => return Err(e.answer(app, req, ctx, browser).await),
        }
    } else {
        session
    };
    if session.identity.organizations.is_some() {
        return Ok(session);
    }
    let Some(token) = session.access_token.as_deref() else {
        // Not written by this version (it keeps the token while organizations are set aside).
        return Err(super::endpoints::login::unauthenticated(app, req, ctx, browser).await);
    };
    match app.oidc.userinfo(token).await {
        Ok(identity) if identity.sub == session.identity.sub => {
            let organizations = app.sessions.keep_aside(&digest, identity.organizations.unwrap_or_default());
            // A refreshed session is no longer what the request's cookie holds: not remembered for it.
            Ok(app.sessions.filled((!refreshed).then_some(&ctx.jar.incoming), &session, &organizations))
        }
        Ok(_) | Err(OidcError::Rejected { .. }) => {
            // The token was refused (revoked at Trousseau), or answered for another user: a
            // session that cannot be completed is none — never anyone else's organizations.
            tracing::info!(sub = %session.identity.sub, "userinfo did not confirm this session's organizations: signing in again");
            Err(super::endpoints::login::unauthenticated(app, req, ctx, browser).await)
        }
        Err(e) => {
            tracing::warn!(sub = %session.identity.sub, error = %e, "cannot get the organizations set aside for this session back from Trousseau: answering 503");
            Err(answer::unavailable(browser, lang(req.headers(), None)))
        }
    }
}

/// 503 when the session store cannot answer: never let a request through unchecked. Not
/// logged per request: the store logs once when it goes down and once when it is back.
pub(crate) fn store_unavailable<B>(req: &Request<B>, e: &StoreError) -> Answer {
    tracing::debug!(error = %e, "session store unavailable: answering 503");
    answer::store_unavailable(is_browser_navigation(req), lang(req.headers(), None))
}

/// `Authorization: Bearer <Trousseau access token>` from an API client, when `api.bearer:
/// userinfo` is on and no session cookie came along: the resolver and the token, or `None` when
/// this is not a bearer request. [`bearer_session`] checks it. A token
/// whose Trousseau session (`sid`) or user (`sub`, session begun before) was ended by a
/// back-channel logout is refused like a session cookie would be — on every replica with
/// `session.revocations: redis`.
fn bearer_token<'a, B>(app: &'a App, req: &'a Request<B>, ctx: &RequestCtx) -> Option<(&'a BearerAuth, &'a str)> {
    let bearer = app.bearer.as_ref()?;
    if app.sessions.has_cookie(&ctx.jar.incoming) {
        return None;
    }
    Some((bearer, req.headers().get(header::AUTHORIZATION).and_then(BearerAuth::token)?))
}

/// The session of a bearer token [`bearer_token`] found, or the answer refusing it.
async fn bearer_session<B>(app: &App, bearer: &BearerAuth, token: &str, req: &Request<B>, ctx: &mut RequestCtx) -> Result<Session, Answer> {
    match bearer.resolve(token).await {
        BearerOutcome::Valid(mut session) => {
            match app.sessions.revocations().is_revoked(&session).await {
                Ok(false) => {}
                Ok(true) => {
                    bearer.forget(token).await;
                    ctx.sub = Some(session.identity.sub.clone());
                    ctx.audit(crate::audit::Event::BearerRefused { reason: "logged_out" });
                    return Err(answer::invalid_bearer());
                }
                Err(e) => return Err(store_unavailable(req, &e)),
            }
            session.org = app.policy.auto_select(&session);
            ctx.sub = Some(session.identity.sub.clone());
            Ok(*session)
        }
        BearerOutcome::Invalid => {
            // Expired, revoked, unknown, or issued to another application: Trousseau does not say which.
            ctx.audit(crate::audit::Event::BearerRefused { reason: "inactive" });
            Err(answer::invalid_bearer())
        }
        BearerOutcome::Unavailable => Err(answer::unavailable(false, lang(req.headers(), None))),
        BearerOutcome::Throttled(retry_after) => {
            let mut r = answer::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "token_checks_throttled", "error_description": "Too many new access tokens to check with Trousseau right now; retry shortly."}),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs()));
            Err(r)
        }
    }
}
