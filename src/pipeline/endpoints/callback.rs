//! `/.trousseau/callback`: Trousseau sends the browser back with `code` (or `error`). The attempt
//! must be this browser's (its state cookie, constant-time match); the code is exchanged with
//! PKCE and the client secret; the ID token is verified; the session is created and saved.

use crate::audit::Event;
use http::{Request, Response};

use super::super::authenticate::store_unavailable;
use super::super::{lang, Answer, RequestCtx};
use crate::answer;
use crate::app::App;
use crate::body::Body;
use crate::oidc::OidcError;
use crate::request::{login_url, query_param};
use crate::session::Session;
use crate::util::clock::{now_millis, now_secs};
use crate::util::id::random_id;

/// The callback came without any sign-in cookie: the diagnosis page, and a log line (at most one a
/// minute) with the facts an administrator needs.
fn cookie_lost<B>(app: &App, req: &Request<B>, lang: crate::pages::Lang) -> Answer {
    let settings = &app.settings;
    let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let public_host = settings.public_url.host_str().map(|h| match settings.public_url.port() {
        Some(port) => format!("{h}:{port}"),
        None => h.to_string(),
    });
    let forwarded_proto = req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok());
    let over_http = settings.secure_cookies && !(settings.proxy.trust_forwarded_headers && forwarded_proto == Some("https"));
    let facts = crate::pages::CookieLost {
        public_url: &settings.public_origin,
        callback_host: (public_host.as_deref() != Some(host)).then_some(host),
        over_http,
    };
    static WARNING: crate::logging::LogBudget = crate::logging::LogBudget::every(std::time::Duration::from_secs(60));
    if let Some(unlogged) = WARNING.take() {
        tracing::warn!(
            host,
            public_url = %settings.public_origin,
            over_http,
            unlogged,
            "sign-in callback without the browser's sign-in cookie: the sign-in started under another host name than public_url, \
             Secure cookies were sent over http, or the browser blocks cookies"
        );
    }
    answer::page(http::StatusCode::BAD_REQUEST, crate::pages::cookie_lost(lang, &facts))
}

/// The audit code of a failed code exchange: Trousseau's error code, or what was wrong with its
/// answer (never its free text).
fn failure_code(e: &OidcError) -> String {
    match e {
        OidcError::Rejected { error, .. } => error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect(),
        OidcError::InvalidIdToken(_) => "invalid_id_token".into(),
        OidcError::Unreachable(_) | OidcError::NotReady => "trousseau_unreachable".into(),
        _ => "protocol_error".into(),
    }
}

/// Completes a sign-in and redirects to where it started.
pub(super) async fn callback<B>(app: &App, req: &Request<B>, ctx: &mut RequestCtx) -> Result<Response<Body>, Answer> {
    let query = req.uri().query();
    let lang = lang(req.headers(), None);
    let state_param = query_param(query, "state").unwrap_or_default();
    let login = app.sessions.take_login(&state_param, &mut ctx.jar);

    if let Some(error) = query_param(query, "error") {
        // Only an answer to a sign-in attempt of this browser is Trousseau speaking; anything
        // else is someone else's link, and its text is not shown (content spoofing).
        let Some(_) = login else {
            return Err(answer::login_expired(lang, &login_url("/")));
        };
        let error: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
        let description = query_param(query, "error_description").map(|d| d.chars().take(500).collect::<String>());
        tracing::info!(error = %error, "Trousseau returned an error to the callback");
        ctx.audit(Event::SignInFailed { error: &error });
        return Err(answer::idp_error(lang, &error, description.as_deref()));
    }
    let (Some(login), Some(code)) = (login, query_param(query, "code")) else {
        if !app.sessions.has_login_cookies(&ctx.jar) {
            // Not an old attempt: this browser brought back no sign-in cookie at all. Say why that
            // happens (the sign-in started under another name, Secure cookies over http, cookies
            // blocked) instead of sending it round again.
            return Err(cookie_lost(app, req, lang));
        }
        return Err(answer::login_expired(lang, &login_url("/")));
    };
    let tokens = match app.oidc.exchange_code(&code, &login).await {
        Ok(tokens) => tokens,
        Err(e @ (OidcError::Unreachable(_) | OidcError::NotReady)) => {
            tracing::warn!(error = %e, "code exchange failed: identity provider unavailable");
            ctx.audit(Event::SignInFailed { error: "trousseau_unreachable" });
            return Err(answer::unavailable(true, lang));
        }
        Err(e) if e.is_invalid_grant() => {
            // The code was used already — the callback reloaded, or opened twice by a double
            // click while the first was under way — or it expired. Nothing is broken: a
            // browser already signed in goes on, any other starts again.
            tracing::info!("code exchange refused (invalid_grant): a used or expired sign-in code");
            ctx.audit(Event::SignInFailed { error: "invalid_grant" });
            if let Ok(Some(_)) = app.sessions.load(&ctx.jar.incoming).await {
                return Ok(answer::redirect(&super::login::return_url(app, &login.return_to)));
            }
            return Err(answer::login_expired(lang, &login_url(&super::login::return_target(app, &login.return_to))));
        }
        Err(e) => {
            tracing::warn!(error = %e, "code exchange failed");
            ctx.audit(Event::SignInFailed { error: &failure_code(&e) });
            return Err(answer::sign_in_failed(lang, &e));
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
        // Kept by `Sessions::save` only for the app (`identity.pass_access_token`) or while the
        // organizations are set aside.
        access_token: Some(tokens.access_token),
        id_token: Some(tokens.id_token),
        organizations_aside: None,
    };
    session.org = app.policy.auto_select(&session);
    ctx.sub = Some(session.identity.sub.clone());
    tracing::info!(sub = %session.identity.sub, "signed in");
    match app.sessions.save(&session, &mut ctx.jar).await {
        Ok(true) => ctx.audit(Event::SignInCompleted { sid: session.sid.as_deref(), organization: session.org.as_deref() }),
        Ok(false) => return Err(answer::session_too_large(lang)),
        Err(e) => return Err(store_unavailable(req, &e)),
    }
    app.sessions.note_sign_in(&mut ctx.jar);
    app.metrics.sign_in_completed();
    Ok(answer::redirect(&super::login::return_url(app, &login.return_to)))
}
