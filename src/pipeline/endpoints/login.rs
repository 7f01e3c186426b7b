//! `/.trousseau/login`, and every other way a sign-in starts: one sealed state cookie per attempt
//! (PKCE verifier, nonce, return path), then a redirect to Trousseau. A request without a session
//! is sent here when it is a browser navigation, and answered 401 otherwise.

use http::{Request, Response};

use super::super::{lang, RequestCtx};
use crate::answer;
use crate::app::App;
use crate::body::Body;
use crate::pages::Lang;
use crate::session::sign_ins::LoopFacts;
use super::super::authenticate::store_unavailable;
use crate::request::{allowed_return, login_url, query_param, referer_return, return_to_of, safe_return_to};

/// `GET /.trousseau/login?rd=<path>`: starts a sign-in that comes back to `rd` (same origin, or a
/// page of a front end on an allowed origin).
pub(super) fn login<B>(app: &App, req: &Request<B>, ctx: &mut RequestCtx) -> Response<Body> {
    let rd = query_param(req.uri().query(), "rd").unwrap_or_default();
    start(app, ctx, &rd, lang(req.headers(), None))
}

/// No (valid) session: browsers are sent to sign in, everything else gets 401 with `login_url` —
/// which comes back to the page that made the request (a same-origin `Referer`), not to the
/// background request's own URL.
///
/// A browser that completed sign-ins in the last minute and still comes without a session is in
/// a loop: it gets the page naming the likely cause instead of one more round
/// ([`crate::session::sign_ins`]).
pub(crate) async fn unauthenticated<B>(app: &App, req: &Request<B>, ctx: &mut RequestCtx, browser: bool) -> Response<Body> {
    let return_to = return_to_of(req);
    if !browser {
        return unauthenticated_json(app, req, &return_to);
    }
    let lang = lang(req.headers(), None);
    match app.sessions.looping(&ctx.jar).await {
        Ok(None) => start(app, ctx, &return_to, lang),
        Ok(Some(facts)) => sign_in_loop(app, &facts, &return_to, lang),
        Err(e) => store_unavailable(req, &e),
    }
}

/// The loop page instead of another sign-in, and one log line a minute with the diagnosis.
fn sign_in_loop(app: &App, facts: &LoopFacts, return_to: &str, lang: Lang) -> Response<Body> {
    static WARNING: crate::logging::LogBudget = crate::logging::LogBudget::every(std::time::Duration::from_secs(60));
    if let Some(unlogged) = WARNING.take() {
        tracing::warn!(
            sign_ins = facts.recent,
            trouble = ?facts.trouble,
            other_secret = facts.other_secret,
            other_replica = facts.other_replica,
            session_cookie_bytes = facts.trail.cookie_bytes,
            unlogged,
            "sign-in loop stopped: a browser signed in repeatedly within a minute and its session did not come back"
        );
    }
    app.metrics.sign_in_loop();
    let try_again = login_url(&return_target(app, return_to));
    answer::page(http::StatusCode::INTERNAL_SERVER_ERROR, crate::pages::sign_in_loop(lang, facts, &try_again))
}

/// 401 with a `login_url` that comes back to the page that made the request, else to `fallback`.
pub(crate) fn unauthenticated_json<B>(app: &App, req: &Request<B>, fallback: &str) -> Response<Body> {
    let return_to = referer_return(req, &app.settings.public_origin, &app.settings.cors.allowed_origins);
    answer::unauthenticated_json(&login_url(return_to.as_deref().unwrap_or(fallback)))
}

/// Where a sign-in may come back to: a page of a front end on an allowed origin
/// (`cors.allowed_origins`), whole; anything else made safe on our own origin ([`safe_return_to`]).
pub(crate) fn return_target(app: &App, rd: &str) -> String {
    allowed_return(rd, &app.settings.cors.allowed_origins).unwrap_or_else(|| safe_return_to(rd))
}

/// [`return_target`] as an absolute URL, for the redirect that ends a sign-in.
pub(crate) fn return_url(app: &App, rd: &str) -> String {
    match allowed_return(rd, &app.settings.cors.allowed_origins) {
        Some(url) => url,
        None => format!("{}{}", app.settings.public_origin, safe_return_to(rd)),
    }
}

/// Starts a sign-in: one sealed state cookie for this attempt, then 302 to Trousseau.
/// `return_to` is made safe here ([`return_target`]: same origin or an allowed front end's, and
/// short enough for the state cookie to stay under the browsers' 4 KB).
pub(crate) fn start(app: &App, ctx: &mut RequestCtx, return_to: &str, lang: Lang) -> Response<Body> {
    let (url, login) = match app.oidc.begin_login(return_target(app, return_to)) {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start sign-in");
            return answer::unavailable(true, lang);
        }
    };
    app.sessions.begin_login(&login, &mut ctx.jar);
    app.metrics.sign_in_started();
    answer::redirect(url.as_str())
}
