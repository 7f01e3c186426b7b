//! `/.trousseau/logout`: forget everything here — the session (its cookies, its record, or its
//! id in the revocation set for a cookie session), every sign-in attempt — then end the Trousseau
//! session too (end-session endpoint, with `id_token_hint` when the ID token was kept). The
//! session's open websockets and streams end with it.

use http::Response;

use super::super::RequestCtx;
use crate::answer;
use crate::app::App;
use crate::body::Body;
use crate::live::Target;
use crate::tether::EndReason;
use crate::util::id::random_id;

/// Signs out and redirects to Trousseau's end-session endpoint (or straight to
/// `oidc.post_logout_redirect_uri` when Trousseau has none).
pub(super) async fn logout(app: &App, ctx: &mut RequestCtx) -> Response<Body> {
    // Sign-out works even when the store is down: the cookies go regardless.
    let session = app.sessions.load(&ctx.jar.incoming).await.ok().flatten();
    app.sessions.end(session.as_deref(), &mut ctx.jar).await;
    app.sessions.clear_logins(&mut ctx.jar);
    if let Some(s) = &session {
        ctx.sub = Some(s.identity.sub.clone());
        tracing::info!(sub = %s.identity.sub, "signed out");
        ctx.audit(crate::audit::Event::Logout);
        // Its websockets and streams end too, here and on the other replicas.
        app.live.end(Target::Session(s.id.clone()), EndReason::Logout).await;
    }
    let post_logout = &app.settings.oidc.post_logout_redirect_uri;
    let Some(end_session) = app.oidc.end_session_endpoint() else {
        return answer::redirect(post_logout);
    };
    let Ok(mut url) = url::Url::parse(&end_session) else {
        return answer::redirect(post_logout);
    };
    {
        let mut q = url.query_pairs_mut();
        match session.as_ref().and_then(|s| s.id_token.as_deref()) {
            Some(hint) => q.append_pair("id_token_hint", hint),
            None => q.append_pair("client_id", &app.settings.oidc.client_id),
        };
        q.append_pair("post_logout_redirect_uri", post_logout);
        q.append_pair("state", &random_id());
    }
    answer::redirect(url.as_str())
}
