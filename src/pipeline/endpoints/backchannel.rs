//! `POST /.trousseau/backchannel-logout`: Trousseau ends a session server-to-server. The logout
//! token is verified, its `jti` may be used once, and every session of that `sid` (or `sub`) is
//! no session from its next request on — cookie sessions included — and their open websockets
//! and streams end at once. A refusal is the sender's
//! fault: 400, and a rate-limited WARN line naming the sender's address.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::super::RequestCtx;
use crate::answer;
use crate::app::App;
use crate::body::Body;
use crate::live::Target;
use crate::pages::Lang;
use crate::request::query_param;
use crate::tether::EndReason;
use crate::util::clock::now_secs;

/// Most bytes of a logout request's form body.
const MAX_FORM: usize = 64 * 1024;

/// Verifies the logout token and records the revocation; 200 `{}` once recorded.
pub(super) async fn logout(app: &App, req: Request<Incoming>, ctx: &RequestCtx) -> Response<Body> {
    let bad = |description: &str| {
        app.oidc.logout_refusals().refused(ctx.peer.ip(), &description);
        answer::json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": "invalid_request", "error_description": description}))
    };
    let Some(form) = super::read_form(req.into_body(), MAX_FORM).await else {
        return bad("request body too large or unreadable");
    };
    // A duplicated logout_token parameter is refused (query_param returns None).
    let Some(token) = query_param(Some(&form), "logout_token") else {
        return bad("exactly one logout_token parameter is required");
    };
    let logout = match app.oidc.verify_logout_token(&token).await {
        Ok(logout) => logout,
        Err(crate::oidc::LogoutTokenError::Oidc(e)) => {
            // Trousseau's configuration is not loaded yet: ours to fix, and Trousseau may retry.
            tracing::warn!(error = %e, "back-channel logout cannot be verified yet: answering 503");
            return answer::unavailable(false, Lang::En);
        }
        Err(e) => return bad(&e.to_string()),
    };
    let revocations = app.sessions.revocations();
    let now = now_secs();
    match revocations.revoke(&logout.jti, logout.sid.as_deref(), logout.sub.as_deref(), now).await {
        Ok(true) => {}
        Ok(false) => return bad("logout token already used"),
        Err(e) => {
            // Not recorded, so not accepted: Trousseau may send it again.
            tracing::error!(error = %e, "back-channel logout could not be recorded: answering 503");
            return answer::store_unavailable(false, Lang::En);
        }
    }
    if let Some(bearer) = &app.bearer {
        // Also checked on every bearer request; dropping them now frees them at once.
        bearer.forget_sessions(logout.sid.as_deref(), logout.sub.as_deref(), now);
    }
    // The sessions' open websockets and streams end now, here and on the other replicas.
    let target = match (logout.sid.clone(), logout.sub.clone()) {
        (Some(sid), _) => Some(Target::Sid(sid)),
        (None, Some(sub)) => Some(Target::Sub { sub, at: now }),
        (None, None) => None,
    };
    let open_connections_ended = match target {
        Some(target) => app.live.end(target, EndReason::Backchannel).await,
        None => 0,
    };
    // `logout_sub` only for a logout of the user everywhere (a token without `sid`).
    let everywhere = if logout.sid.is_none() { logout.sub.as_deref() } else { None };
    ctx.audit(crate::audit::Event::BackchannelLogout { sid: logout.sid.as_deref(), logout_sub: everywhere, open_connections_ended });
    app.metrics.backchannel_revocation();
    tracing::info!(sid = logout.sid.as_deref().unwrap_or("-"), sub = logout.sub.as_deref().unwrap_or("-"), "back-channel logout: sessions ended");
    answer::json(StatusCode::OK, &serde_json::json!({}))
}
