//! `GET /.trousseau/session`: the session's state for a front end — who, which organization, in
//! how many seconds it ends and its token is next refreshed — never a token. It refreshes the
//! session when due, so a single-page app that calls it before `refresh_in` runs out keeps its
//! session alive without a page load; without a session, 401 with `login_url` (back to the page
//! that asked, from its `Referer`).

use http::{Request, Response};

use super::super::authenticate::session;
use super::super::{Answer, RequestCtx};
use crate::answer;
use crate::app::App;
use crate::body::Body;
use crate::util::clock::now_secs;

/// 200 with the state (refreshed when due), or 401 with `login_url`.
pub(super) async fn state<B>(app: &App, req: &Request<B>, ctx: &mut RequestCtx) -> Result<Response<Body>, Answer> {
    let Some(current) = session(app, req, ctx).await? else {
        return Err(super::login::unauthenticated_json(app, req, "/"));
    };
    let current = match super::super::refresh::refresh(app, current, ctx).await {
        Ok(current) => current,
        Err(e) => return Err(e.answer(app, req, ctx, false).await),
    };
    let now = now_secs();
    let expires_in = app.sessions.deadline(&current).saturating_sub(now);
    let refresh_in = app.refresher.due_at(&current).saturating_sub(now);
    Ok(answer::session_state(&current, expires_in, refresh_in))
}
