//! Phase 4: a new access token when the one behind the session is due (single-flight per token,
//! and across replicas through Redis). After a refresh the organization is re-selected when none
//! is, and the session is saved (a new cookie, or the store's record). A grant Trousseau ends is
//! the session's end. Sessions from a bearer token are not refreshed: their token is the client's.

use std::sync::Arc;

use http::Request;

use super::{lang, Answer, RequestCtx};
use crate::answer;
use crate::app::App;
use crate::live::Target;
use crate::session::refresh::RefreshOutcome;
use crate::session::store::StoreError;
use crate::session::Session;
use crate::tether::EndReason;

/// Why the refresh step left no session to serve with.
pub(crate) enum NotServed {
    /// The grant is over (`invalid_grant`, or expired without a refresh token): sign in again.
    Ended,
    /// Trousseau is unreachable and the grace period is over.
    IdpUnavailable,
    /// The session store could not save the refreshed session or coordinate the refresh.
    Store(StoreError),
}

impl NotServed {
    /// The answer on an app route: sign in again (browser) or 401, 503 otherwise.
    pub(super) async fn answer<B>(self, app: &App, req: &Request<B>, ctx: &mut RequestCtx, browser: bool) -> Answer {
        match self {
            NotServed::Ended => super::endpoints::login::unauthenticated(app, req, ctx, browser).await,
            NotServed::IdpUnavailable => answer::unavailable(browser, lang(req.headers(), None)),
            NotServed::Store(e) => super::authenticate::store_unavailable(req, &e),
        }
    }
}

/// Refreshes when due. May change: the session, and `ctx`'s outgoing cookies (the refreshed
/// session, or the ended one's removal).
pub(crate) async fn refresh(app: &App, session: Arc<Session>, ctx: &mut RequestCtx) -> Result<Arc<Session>, NotServed> {
    if ctx.via_bearer || !app.refresher.is_due(&session) {
        return Ok(session);
    }
    // The session's open connections may have refreshed it in the background since its cookie
    // was written: go on from that copy, and hand it to the browser. (A server-side store's
    // record, just loaded, is the newest already.)
    let copy = if app.sessions.server_side() { None } else { app.sessions.newer_copy(&session).await };
    let (session, newer) = match copy {
        // Made from the session its connections were opened with: the organization chosen since
        // (in this request's cookie) is kept.
        Some(copy) => (crate::session::refresh::with_own_choice(&session, copy), true),
        None => (session, false),
    };
    let id = session.id.clone();
    // A span of the request's trace: the refresh calls Trousseau (and Redis, to coordinate).
    let mut span = ctx.trace.child("refresh", crate::trace::record::SpanKind::Internal);
    let outcome = crate::trace::within(ctx.trace.span_of(span.as_ref()), app.refresher.refresh_if_due(session)).await;
    if let Some(span) = &mut span {
        span.set("trousseau.refresh.outcome", outcome.label());
        if matches!(outcome, RefreshOutcome::Unavailable | RefreshOutcome::StoreUnavailable(_)) {
            span.fail();
        }
    }
    drop(span);
    match outcome {
        RefreshOutcome::Fresh(session) | RefreshOutcome::Stale(session) if !newer => Ok(session),
        RefreshOutcome::Fresh(session) | RefreshOutcome::Stale(session) | RefreshOutcome::Refreshed(session) => {
            let session = settled(app, session);
            ctx.trace.note_session("refreshed");
            app.sessions.save(&session, &mut ctx.jar).await.map_err(NotServed::Store)?;
            app.live.refreshed(&session, &app.policy);
            Ok(session)
        }
        RefreshOutcome::Ended(ending) => {
            ctx.trace.note_session("ended");
            if ending == crate::session::refresh::Ending::Refused {
                // Once per refusal: the request whose refresh Trousseau refused.
                ctx.audit(crate::audit::Event::RefreshRefused { error: "invalid_grant" });
            }
            app.sessions.end(None, &mut ctx.jar).await;
            app.live.end(Target::Session(id), EndReason::Refused).await;
            Err(NotServed::Ended)
        }
        RefreshOutcome::Unavailable => Err(NotServed::IdpUnavailable),
        RefreshOutcome::StoreUnavailable(e) => Err(NotServed::Store(e)),
    }
}

/// A refreshed session with its organization chosen again when none is (its membership may be
/// gone): as the request path and the background refresh of open connections both keep it.
pub(crate) fn settled(app: &App, mut session: Arc<Session>) -> Arc<Session> {
    if session.org.is_none() {
        if let Some(org) = app.policy.auto_select(&session) {
            Arc::make_mut(&mut session).org = Some(org);
        }
    }
    session
}
