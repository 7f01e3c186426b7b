//! `GET /.trousseau/userinfo`: the session's identity and selected organization as JSON, for the
//! app's front end — never a token.

use http::{Request, Response};

use super::super::authenticate::session;
use super::super::{Answer, RequestCtx};
use crate::answer;
use crate::app::App;
use crate::body::Body;

/// 200 with the identity, or 401 with `login_url`.
pub(super) async fn userinfo<B>(app: &App, req: &Request<B>, ctx: &mut RequestCtx) -> Result<Response<Body>, Answer> {
    match session(app, req, ctx).await? {
        Some(session) => Ok(answer::userinfo(&session)),
        None => Err(super::login::unauthenticated_json(app, req, "/")),
    }
}
