//! `/.trousseau/organizations`: the organization selector (GET: a page for browsers, JSON for
//! scripts) and the choice (POST: a same-origin form, stored in the session, then back to `rd`).

use std::sync::Arc;

use http::header;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::super::authenticate::session;
use super::super::{lang, Answer, RequestCtx};
use crate::answer;
use crate::app::App;
use crate::body::Body;
use crate::policy::Denial;
use crate::request::{is_browser_navigation, login_url, query_param, safe_return_to};
use crate::util::clock::now_millis;

/// Most bytes of the choice's form body.
const MAX_FORM: usize = 16 * 1024;

/// `GET`: the organizations this user may choose here.
pub(super) async fn selector<B>(app: &App, req: &Request<B>, ctx: &mut RequestCtx) -> Result<Response<Body>, Answer> {
    let browser = is_browser_navigation(req);
    let Some(session) = session(app, req, ctx).await? else {
        return Err(super::login::unauthenticated(app, req, ctx, browser).await);
    };
    let lang = lang(req.headers(), Some(&session));
    let rd = safe_return_to(&query_param(req.uri().query(), "rd").unwrap_or_default());
    let choices: Vec<&crate::identity::Organization> = app.policy.acceptable_organizations(&session).collect();
    if choices.is_empty() {
        return Err(answer::forbidden(browser, lang, &Denial::NoOrganization, &session));
    }
    if !browser {
        return Ok(answer::json(StatusCode::OK, &serde_json::json!({"selected": session.org, "organizations": choices})));
    }
    Ok(answer::page(StatusCode::OK, crate::pages::organization_selector(lang, &session, &choices, &rd)))
}

/// `POST`: stores the choice in the session and returns to `rd` (303).
pub(super) async fn choose(app: &App, req: Request<Incoming>, ctx: &mut RequestCtx) -> Result<Response<Body>, Answer> {
    let request_lang = lang(req.headers(), None);
    // Same-origin forms only (the session cookie is SameSite=Lax too).
    let h = req.headers();
    let same_site_fetch = h.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"same-origin");
    let origin_ok = match h.get(header::ORIGIN) {
        None => h.get("sec-fetch-site").is_none_or(|v| v.as_bytes() == b"same-origin" || v.as_bytes() == b"none"),
        Some(o) if o.as_bytes() == app.settings.public_origin.as_bytes() => true,
        // Browsers send `Origin: null` under a no-referrer policy; Fetch Metadata still tells.
        Some(o) => o.as_bytes() == b"null" && same_site_fetch,
    };
    let Some(mut session) = session(app, &req, ctx).await? else {
        return Err(answer::unauthenticated_json(&login_url("/.trousseau/organizations")));
    };
    if !origin_ok {
        return Err(answer::json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({"error": "cross_origin", "error_description": "The organization choice must come from this site."}),
        ));
    }
    // The page language of a refusal below: the user's locale, else the browser's.
    let session_lang = lang(req.headers(), Some(&session));
    let Some(form) = super::read_form(req.into_body(), MAX_FORM).await else {
        return Err(answer::json(StatusCode::PAYLOAD_TOO_LARGE, &serde_json::json!({"error": "too_large"})));
    };
    let org = query_param(Some(&form), "org").unwrap_or_default();
    let rd = safe_return_to(&query_param(Some(&form), "rd").unwrap_or_default());
    if !app.policy.acceptable_organizations(&session).any(|o| o.id == org) {
        return Err(answer::forbidden(true, session_lang, &Denial::OrganizationNotAllowed, &session));
    }
    let session = Arc::make_mut(&mut session);
    let from = session.org.replace(org.clone());
    session.updated_at_ms = now_millis();
    match app.sessions.save(session, &mut ctx.jar).await {
        Ok(true) => {
            ctx.sub = Some(session.identity.sub.clone());
            ctx.audit(crate::audit::Event::OrganizationSwitched { from: from.as_deref(), to: &org });
        }
        Ok(false) => return Err(answer::session_too_large(request_lang)),
        Err(e) => {
            tracing::debug!(error = %e, "session store unavailable: answering 503");
            return Err(answer::store_unavailable(true, request_lang));
        }
    }
    let mut r = answer::redirect(&format!("{}{}", app.settings.public_origin, rd));
    *r.status_mut() = StatusCode::SEE_OTHER;
    Ok(r)
}
