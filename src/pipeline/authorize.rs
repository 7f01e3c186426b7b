//! Phase 5: may this user do this here? The route rules (method, path read every way an app
//! might, roles, groups) and the organization policy ([`crate::policy`]).

use http::Request;

use super::{lang, Answer, RequestCtx};
use crate::answer;
use crate::app::App;
use crate::policy::Decision;
use crate::request::return_to_of;
use crate::session::Session;

/// `Ok` when the policy allows the request; otherwise the 403 (or, when an organization must be
/// chosen first, the way to the selector). Changes nothing.
pub(super) fn authorize<B>(app: &App, req: &Request<B>, session: &Session, browser: bool, ctx: &RequestCtx) -> Result<(), Answer> {
    match app.policy.authorize(session, req.method(), req.uri().path()) {
        Decision::Allow => Ok(()),
        Decision::ChooseOrganization => {
            ctx.trace.note_route("choose_organization");
            Err(answer::choose_organization(browser, lang(req.headers(), Some(session)), &return_to_of(req)))
        }
        Decision::Deny(denial) => {
            audit_denial(app, ctx, session, req.method(), req.uri().path(), &denial);
            Err(answer::forbidden(browser, lang(req.headers(), Some(session)), &denial, session))
        }
    }
}

/// The audit line of a refusal by the policy: which part of the configuration refused, and why.
pub(super) fn audit_denial(app: &App, ctx: &RequestCtx, session: &Session, method: &http::Method, path: &str, denial: &crate::policy::Denial) {
    let rule = app.policy.refusing_rule(session, method, path);
    ctx.trace.note_route("denied");
    ctx.audit(crate::audit::Event::RequestDenied { rule: &rule, reason: denial.code(), method: method.as_str(), path });
}

/// The audit line of a refusal by a gateway's narrowing of the route (forward-auth's
/// `?roles=`/`?orgs=`, gRPC's `context_extensions`), the configuration having allowed.
pub(super) fn audit_narrowing_denial(ctx: &RequestCtx, method: &http::Method, path: &str, denial: &crate::policy::Denial) {
    ctx.trace.note_route("denied");
    ctx.audit(crate::audit::Event::RequestDenied { rule: "gateway narrowing (roles, orgs)", reason: denial.code(), method: method.as_str(), path });
}
