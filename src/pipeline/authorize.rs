//! Phase 5: may this user do this here? The route rules (method, path read every way an app
//! might, roles, groups) and the organization policy ([`crate::policy`]).

use http::Request;

use super::{lang, Answer};
use crate::answer;
use crate::app::App;
use crate::policy::Decision;
use crate::request::return_to_of;
use crate::session::Session;

/// `Ok` when the policy allows the request; otherwise the 403 (or, when an organization must be
/// chosen first, the way to the selector). Changes nothing.
pub(super) fn authorize<B>(app: &App, req: &Request<B>, session: &Session, browser: bool) -> Result<(), Answer> {
    match app.policy.authorize(session, req.method(), req.uri().path()) {
        Decision::Allow => Ok(()),
        Decision::ChooseOrganization => Err(answer::choose_organization(browser, lang(req.headers(), Some(session)), &return_to_of(req))),
        Decision::Deny(denial) => Err(answer::forbidden(browser, lang(req.headers(), Some(session)), &denial, session)),
    }
}
