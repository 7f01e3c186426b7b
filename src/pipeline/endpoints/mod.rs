//! The proxy's own endpoints under `/.trousseau/`, one file each. [`serve`] picks one by method
//! and path; each returns `Result<Response, Response>` like the phases, and may use them
//! ([`super::authenticate::session`], [`super::refresh::refresh`]).

mod backchannel;
mod callback;
pub(super) mod forward_auth;
pub mod health;
mod jwks;
pub(crate) mod login;
mod logout;
mod organizations;
mod session;
mod userinfo;

use http::{Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::{lang, Answer, RequestCtx, RESERVED_PREFIX};
use crate::answer;
use crate::app::App;
use crate::body::Body;
use crate::request::is_browser_navigation;

/// Serves `/.trousseau/*`; an unknown path or method is 404.
pub(super) async fn serve(app: &App, req: Request<Incoming>, ctx: &mut RequestCtx) -> Result<Response<Body>, Answer> {
    let path = req.uri().path();
    let endpoint = path.strip_prefix(RESERVED_PREFIX).unwrap_or("");
    match (req.method(), endpoint) {
        (&Method::GET | &Method::HEAD, "healthz") => Ok(health::healthz()),
        (&Method::GET | &Method::HEAD, "readyz") => Ok(health::readyz(app)),
        (&Method::GET | &Method::HEAD, "jwks.json") => Ok(jwks::jwks(app)),
        (&Method::GET | &Method::HEAD, "login") => Ok(login::login(app, &req, ctx)),
        (&Method::GET, "callback") => callback::callback(app, &req, ctx).await,
        (&Method::GET | &Method::POST, "logout") => Ok(logout::logout(app, ctx).await),
        (_, "auth") => forward_auth::check(app, &req, ctx).await,
        (_, e) if e.starts_with("auth/") => forward_auth::check(app, &req, ctx).await,
        (&Method::POST, "backchannel-logout") => Ok(backchannel::logout(app, req, ctx).await),
        (&Method::GET | &Method::HEAD, "organizations") => organizations::selector(app, &req, ctx).await,
        (&Method::POST, "organizations") => organizations::choose(app, req, ctx).await,
        (&Method::GET | &Method::HEAD, "userinfo") => userinfo::userinfo(app, &req, ctx).await,
        (&Method::GET | &Method::HEAD, "session") => session::state(app, &req, ctx).await,
        _ => Ok(answer::not_found(is_browser_navigation(&req), lang(req.headers(), None))),
    }
}

/// A request's form body (`application/x-www-form-urlencoded`) as text, read up to `max` bytes;
/// `None` when it is longer or cannot be read. Parameters come out with [`crate::request::query_param`].
async fn read_form(body: Incoming, max: usize) -> Option<String> {
    let bytes = BodyExt::collect(Limited::new(body, max)).await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}
