//! The authorization endpoint: checks the request the way Trousseau does, shows the sign-in page
//! (GET), and turns the person's choice into a code or an error redirect (POST).
//!
//! Errors that cannot be trusted to go back to the client (unknown client, unregistered
//! redirect URI) are shown as a page; all others are redirected with `error`, `error_description`
//! and `state`, as RFC 6749 §4.1.2.1 asks.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, Response, StatusCode};

use super::grants::Authorization;
use super::pages::{self, PageError, SignInView};
use super::users::DevUser;
use super::web::{self, Params};
use super::{now_unix, DevIdp, DevIdpConfig};
use crate::body::{Body, BoxError};
use crate::pages::Lang;

/// An authorization request that passed every check and waits for someone to be chosen.
#[derive(Debug)]
pub(super) struct PendingRequest {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    scopes: Vec<String>,
    code_challenge: String,
    /// `prompt=login` or an exceeded `max_age`: the SSO session may not be reused.
    force_login: bool,
}

/// A browser's session at the IdP (behind the SSO cookie).
#[derive(Clone, Debug)]
pub(super) struct SsoSession {
    pub(super) sub: String,
    pub(super) auth_time: i64,
    /// SHA-256 hex of the session key, as Authentik computes `sid`.
    pub(super) sid: String,
}

/// The SSO session of this browser, if its cookie names a live one for an existing user.
pub(super) fn current_sso(idp: &DevIdp, headers: &HeaderMap) -> Option<(String, SsoSession)> {
    let key = web::cookie(headers, web::SSO_COOKIE)?;
    let session = idp.sso.get(&key)?;
    idp.directory.get(&session.sub)?;
    Some((key, session))
}

/// GET: validate, then show the sign-in page (or answer `prompt=none` at once).
pub(super) fn start(
    idp: &DevIdp,
    query: Option<&str>,
    headers: &HeaderMap,
    lang: Lang,
) -> Response<Body> {
    let params = Params::parse(query.unwrap_or("").as_bytes());
    let request = match validate(idp, &params) {
        Ok(request) => request,
        Err(Refusal::Page(error)) => return error_page(error, lang),
        Err(Refusal::Redirect(redirect)) => return *redirect,
    };
    let prompt = params.get("prompt").unwrap_or("");
    let prompt_none = prompt.split(' ').any(|p| p == "none");
    let max_age = params.get("max_age").and_then(|m| m.parse::<i64>().ok());
    let now = now_unix();
    let session = current_sso(idp, headers)
        .filter(|(_, s)| max_age.is_none_or(|m| now.saturating_sub(s.auth_time) <= m));
    let force_login =
        prompt.split(' ').any(|p| p == "login") || (max_age.is_some() && session.is_none());

    if prompt_none {
        let Some((_, session)) = session else {
            return error_redirect(
                &request,
                "login_required",
                "There is no active session at the identity provider",
            );
        };
        let Some(user) = idp.directory.get(&session.sub) else {
            return error_redirect(
                &request,
                "login_required",
                "The session's user no longer exists",
            );
        };
        if let Some(refused) = refuse_user(idp, &request, &user) {
            return refused;
        }
        return code_redirect(idp, &request, &user, &session, None);
    }

    let id = web::random_token(24);
    let continue_as = session
        .filter(|_| !force_login)
        .and_then(|(_, s)| idp.directory.get(&s.sub))
        .filter(|u| !u.denied && !idp.directory.is_disabled(&u.sub));
    let view = SignInView {
        request_id: &id,
        client_id: &request.client_id,
        scopes: &request.scopes,
        continue_as: continue_as.as_ref(),
        users: idp.directory.list(),
    };
    let page = pages::sign_in(idp, &view, lang);
    idp.pending.insert(
        id,
        Arc::new(PendingRequest {
            force_login,
            ..request
        }),
    );
    web::html(StatusCode::OK, page)
}

/// POST: the chosen user (`user` = sub), a typed email (`email`), or `cancel`, for the pending
/// request named by `request`.
pub(super) async fn choose<B>(idp: &DevIdp, req: Request<B>, lang: Lang) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let params = match web::read_form(&parts.headers, body).await {
        Ok(params) if params.first_repeated().is_none() => params,
        _ => return error_page(PageError::BadForm, lang),
    };
    let Some(id) = params.get("request") else {
        return error_page(PageError::RequestExpired, lang);
    };
    let Some(pending) = idp.pending.get(id) else {
        return error_page(PageError::RequestExpired, lang);
    };
    let user = if params.get("cancel").is_some() {
        None
    } else if let Some(sub) = params.get("user") {
        match idp.directory.get(sub) {
            Some(user) => Some(user),
            None => return error_page(PageError::UnknownUser, lang),
        }
    } else if let Some(email) = params.get("email") {
        let email = email.trim();
        if !plausible_email(email) {
            return error_page(PageError::InvalidEmail, lang);
        }
        let locale = match lang {
            Lang::Fr => "fr-FR",
            Lang::En => "en-GB",
        };
        Some(idp.directory.for_email(email, locale))
    } else {
        return error_page(PageError::NoUserChosen, lang);
    };
    // Single use: of two concurrent submissions, only one gets here.
    if idp.pending.remove(id).is_none() {
        return error_page(PageError::RequestExpired, lang);
    }
    let Some(user) = user else {
        return error_redirect(&pending, "access_denied", "The user cancelled the sign-in");
    };
    if let Some(refused) = refuse_user(idp, &pending, &user) {
        return refused;
    }

    let existing = current_sso(idp, &parts.headers);
    let (session, new_key) = match existing {
        Some((_, session)) if session.sub == user.sub && !pending.force_login => (session, None),
        other => {
            if let Some((old_key, _)) = other {
                idp.sso.invalidate(&old_key);
            }
            let key = web::random_token(32);
            let session = SsoSession {
                sub: user.sub.clone(),
                auth_time: now_unix(),
                sid: web::sha256_hex(key.as_bytes()),
            };
            idp.sso.insert(key.clone(), session.clone());
            (session, Some(key))
        }
    };
    code_redirect(idp, &pending, &user, &session, new_key.as_deref())
}

/// Why an authorization request was refused before anyone was asked.
enum Refusal {
    /// The client or redirect URI cannot be trusted: show a page, never redirect.
    Page(PageError),
    /// Redirect the error back to the client (boxed: a response is large).
    Redirect(Box<Response<Body>>),
}

/// Trousseau's checks, in the order that decides whether an error may be redirected: the client
/// and its redirect URI first (an error about them is a page: the redirect URI is not trusted),
/// then the rest (errors go back to the client).
fn validate(idp: &DevIdp, params: &Params) -> Result<PendingRequest, Refusal> {
    let (client_id, redirect_uri) = client(&idp.config, params).map_err(Refusal::Page)?;
    let mut request = PendingRequest {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        state: params.get("state").map(str::to_owned),
        nonce: params.get("nonce").map(str::to_owned),
        scopes: Vec::new(),
        code_challenge: String::new(),
        force_login: false,
    };
    match redirectable_checks(&idp.config, params) {
        Ok((scopes, challenge)) => {
            request.scopes = scopes;
            request.code_challenge = challenge;
            Ok(request)
        }
        Err((error, description)) => Err(Refusal::Redirect(Box::new(error_redirect(&request, error, &description)))),
    }
}

/// The checks whose errors go back to the client, in Trousseau's order; the scopes and the PKCE
/// challenge when they pass.
fn redirectable_checks(config: &DevIdpConfig, params: &Params) -> Result<(Vec<String>, String), Redirected> {
    request_form(params)?;
    let scopes = scopes(config, params)?;
    let challenge = pkce(params)?;
    prompt(params)?;
    Ok((scopes, challenge))
}

/// An authorization error redirected to the client: its code and description.
type Redirected = (&'static str, String);

/// The client id and the redirect URI, each sent once, registered.
fn client<'p>(config: &DevIdpConfig, params: &'p Params) -> Result<(&'p str, &'p str), PageError> {
    let client_id = match params.get("client_id") {
        _ if params.is_repeated("client_id") => return Err(PageError::RepeatedClientParameter),
        None => return Err(PageError::MissingClientId),
        Some(c) if c != config.client_id => return Err(PageError::UnknownClient),
        Some(c) => c,
    };
    let redirect_uri = match params.get("redirect_uri") {
        _ if params.is_repeated("redirect_uri") => return Err(PageError::RepeatedClientParameter),
        None => return Err(PageError::MissingRedirectUri),
        Some(r) if !config.redirect_uris.iter().any(|u| u == r) => return Err(PageError::UnregisteredRedirectUri),
        Some(r) => r,
    };
    Ok((client_id, redirect_uri))
}

/// No parameter twice, no request object, `response_type=code`, the query response mode.
fn request_form(params: &Params) -> Result<(), Redirected> {
    if let Some(name) = params.first_repeated() {
        return Err(("invalid_request", format!("The parameter {name} was sent more than once")));
    }
    if params.get("request").is_some() {
        return Err(("request_not_supported", "Request objects are not supported".into()));
    }
    if params.get("request_uri").is_some() {
        return Err(("request_uri_not_supported", "request_uri is not supported".into()));
    }
    match params.get("response_type") {
        Some("code") => {}
        None => return Err(("invalid_request", "response_type is required".into())),
        Some(_) => return Err(("unsupported_response_type", "Only response_type=code is supported".into())),
    }
    if !matches!(params.get("response_mode"), None | Some("query")) {
        return Err(("invalid_request", "Only response_mode=query is supported".into()));
    }
    Ok(())
}

/// The scopes asked for, each once: `openid` among them, all allowed for the application.
fn scopes(config: &DevIdpConfig, params: &Params) -> Result<Vec<String>, Redirected> {
    let mut scopes: Vec<String> = Vec::new();
    for scope in params.get("scope").unwrap_or("").split(' ').filter(|s| !s.is_empty()) {
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    if !scopes.iter().any(|s| s == "openid") {
        return Err(("invalid_scope", "The scope must include openid".into()));
    }
    if let Some(scope) = scopes.iter().find(|s| !config.allowed_scopes.contains(s)) {
        return Err(("invalid_scope", format!("The scope {scope} is not allowed for this application")));
    }
    Ok(scopes)
}

/// PKCE, mandatory: an S256 challenge of the right form.
fn pkce(params: &Params) -> Result<String, Redirected> {
    let Some(challenge) = params.get("code_challenge") else {
        return Err(("invalid_request", "PKCE is mandatory: send code_challenge with code_challenge_method=S256".into()));
    };
    if params.get("code_challenge_method") != Some("S256") {
        return Err(("invalid_request", "PKCE is mandatory: code_challenge_method must be S256".into()));
    }
    let well_formed = challenge.len() == 43 && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return Err((
            "invalid_request",
            "code_challenge must be the base64url-encoded SHA-256 of the code_verifier (43 characters)".into(),
        ));
    }
    Ok(challenge.to_owned())
}

/// `prompt` values Trousseau knows (`none` alone), and `max_age` a number of seconds.
fn prompt(params: &Params) -> Result<(), Redirected> {
    let prompts: Vec<&str> = params.get("prompt").unwrap_or("").split(' ').filter(|p| !p.is_empty()).collect();
    if let Some(p) = prompts.iter().find(|p| !matches!(**p, "none" | "login" | "consent" | "select_account")) {
        return Err(("invalid_request", format!("Unsupported prompt value {p}")));
    }
    if prompts.contains(&"none") && prompts.len() > 1 {
        return Err(("invalid_request", "prompt=none cannot be combined with other values".into()));
    }
    if params.get("max_age").is_some_and(|max_age| max_age.parse::<u32>().is_err()) {
        return Err(("invalid_request", "max_age must be a number of seconds".into()));
    }
    Ok(())
}

/// `access_denied` for a denied or disabled user, `None` when they may sign in.
fn refuse_user(idp: &DevIdp, request: &PendingRequest, user: &DevUser) -> Option<Response<Body>> {
    if user.denied {
        return Some(error_redirect(
            request,
            "access_denied",
            "User is not in the access group for this application",
        ));
    }
    if idp.directory.is_disabled(&user.sub) {
        return Some(error_redirect(
            request,
            "access_denied",
            "This account is disabled",
        ));
    }
    None
}

/// Issues a code and redirects to the client with it (and the new SSO cookie, if any).
fn code_redirect(
    idp: &DevIdp,
    request: &PendingRequest,
    user: &DevUser,
    session: &SsoSession,
    new_sso_key: Option<&str>,
) -> Response<Body> {
    let code = idp.grants.issue_code(
        Authorization {
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            scopes: request.scopes.clone(),
            nonce: request.nonce.clone(),
            code_challenge: request.code_challenge.clone(),
            sub: user.sub.clone(),
            auth_time: session.auth_time,
            sid: session.sid.clone(),
        },
        idp.config.code_ttl,
    );
    let mut res = back_to_client(request, &[("code", &code)]);
    if let Some(key) = new_sso_key {
        if let Some(cookie) =
            web::sso_cookie(&idp.prefix, idp.base.starts_with("https:"), Some(key))
        {
            res.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    res
}

/// Redirects an OAuth error to the client.
fn error_redirect(request: &PendingRequest, error: &str, description: &str) -> Response<Body> {
    back_to_client(
        request,
        &[("error", error), ("error_description", description)],
    )
}

/// 302 to the registered redirect URI with `pairs` and the request's `state` appended.
fn back_to_client(request: &PendingRequest, pairs: &[(&str, &str)]) -> Response<Body> {
    let Ok(mut url) = url::Url::parse(&request.redirect_uri) else {
        // Registered URIs were validated when the IdP was built.
        return web::oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "bad redirect_uri",
        );
    };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
        if let Some(state) = &request.state {
            query.append_pair("state", state);
        }
    }
    web::redirect(&url)
}

fn error_page(error: PageError, lang: Lang) -> Response<Body> {
    web::html(StatusCode::BAD_REQUEST, pages::error(error, lang))
}

/// Loose shape check for the "any email" form: one `@`, something on both sides, no spaces.
fn plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
}
