//! `grpc_authz_listen`: Envoy's external authorization over gRPC —
//! `envoy.service.auth.v3.Authorization/Check`, plaintext HTTP/2 — as Envoy's `ext_authz` filter
//! (`grpc_service`, `transport_api_version: V3`), Envoy Gateway and Cilium (the Gateway API
//! `ExternalAuth` filter's gRPC form) call it. Messages and service from the `envoy-types` crate.
//!
//! A check is judged by `/.trousseau/auth`'s own decision, through `App::check_external`: this
//! module only translates, both ways.
//!
//! In: the method and the path come from the check request's HTTP attributes and from nothing
//! else — a client's `X-Forwarded-Uri`, `X-Original-URI`, `X-Forwarded-Method` or
//! `X-Original-Method` is dropped, never read — with the client's headers as Envoy passed them on
//! (`headers`, or `header_map` with `encode_raw_headers`) and the route's `context_extensions`
//! `roles` and `orgs` ([`Narrowing`]: set per route in Envoy's configuration, out of the
//! client's reach).
//!
//! Out, never a gRPC error for a policy outcome (Envoy would answer its own 403, without our
//! body or `Location`):
//! - allowed: `OkHttpResponse` with every identity header `/.trousseau/auth`'s 200 carries —
//!   empty when the user has no such claim, each overwriting a client's copy of that name — and,
//!   in `headers_to_remove`, the client's other spellings of identity headers (`x_trousseau_sub`,
//!   a name we do not send). Never a name we set: Envoy removes after it sets. A refreshed
//!   session's `Set-Cookie` goes in `response_headers_to_add`, to the browser.
//! - refused: `DeniedHttpResponse` with the status, headers (`Location`, `Set-Cookie`,
//!   `WWW-Authenticate` …) and body of the HTTP form. A check request that describes no readable
//!   request is refused 403 `ambiguous_request`; a check that fails inside, 503. Both are denials,
//!   not errors, so Envoy's `failure_mode_allow` cannot let them through.
//!
//! Served by the accept loop of the other listeners ([`crate::limits::listener`]), HTTP/2 only:
//! its connections count under `limits.max_connections` apart from `listen`'s, with the same
//! timeouts and the same drain at shutdown. Its requests are not held to the request caps: its
//! one client is the gateway, asking for all of its users.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue as ProtoHeader,
    HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use futures_util::FutureExt as _;
use http::header::{HeaderMap, HeaderName, HeaderValue, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower_service::Service as _;

use crate::answer;
use crate::app::{App, Current};
use crate::body::Body;
use crate::forward_auth::{original_request, Ambiguous, Narrowing, OriginalRequest};
use crate::identity::{is_identity_header, ExtraHeaders};
use crate::limits::connection::{Connection, ListenerKind};
use crate::limits::inflight::InFlight;
use crate::limits::listener::{serve_connections, Listening};

/// Serves checks on `listener` until `shutdown` completes, with the app `current` holds when each
/// check begins (a reload swaps it; a check keeps the one it began with); then lets the checks in
/// flight finish for at most `drain`.
pub async fn serve(listener: TcpListener, current: Arc<Current>, shutdown: impl Future<Output = ()>, drain: Duration) {
    let limits = Arc::clone(&current.get().limits);
    let service = AuthorizationServer::new(Checker { current });
    let handler = move |mut req: Request<Incoming>, conn: &Arc<Connection>| {
        let flight = InFlight::begin(conn, &req);
        req.extensions_mut().insert(Gateway(conn.peer()));
        let mut service = service.clone();
        async move {
            let Ok(response) = service.call(req).await;
            response.map(|body| flight.respond(crate::body::stream(body)))
        }
    };
    serve_connections(Listening::plain(listener), limits, ListenerKind::GrpcAuthz, handler, shutdown, drain, None).await;
}

/// The gateway's address (the connection's peer), for the check's context.
#[derive(Clone, Copy)]
struct Gateway(SocketAddr);

/// The `Authorization` service.
struct Checker {
    current: Arc<Current>,
}

#[tonic::async_trait]
impl Authorization for Checker {
    async fn check(&self, request: tonic::Request<CheckRequest>) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let peer = request.extensions().get::<Gateway>().map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |g| g.0);
        let app = self.current.get();
        Ok(tonic::Response::new(decide(&app, &request.into_inner(), peer).await))
    }
}

/// The answer to one check request.
async fn decide(app: &App, check: &CheckRequest, peer: SocketAddr) -> CheckResponse {
    let extra = &app.settings.identity.extra_headers;
    let Ok((original, headers, narrowing)) = described(check) else {
        static WARNING: crate::logging::LogBudget = crate::logging::LogBudget::every_second();
        if let Some(unlogged) = WARNING.take() {
            tracing::warn!(gateway = %peer, unlogged, "gRPC check refused: its HTTP attributes name no readable method and path (is ext_authz on an HTTP route?)");
        }
        let refused = answer::json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({"error": "forbidden", "reason": "ambiguous_request", "error_description": "The check request's HTTP attributes name no readable method and path."}),
        );
        return check_response(refused, &[], None, extra).await;
    };
    let client_copies: Vec<HeaderName> = headers.keys().filter(|name| is_identity_header(name, extra)).cloned().collect();
    let cookie = cookie_for_app(app, &headers);
    // A panic in the decision must still refuse: Envoy would otherwise see an error, which
    // `failure_mode_allow` lets through.
    let judged = AssertUnwindSafe(app.check_external(original, headers, narrowing, peer)).catch_unwind().await;
    let answer = judged.unwrap_or_else(|_| {
        tracing::error!(gateway = %peer, "gRPC check failed inside: refused with 503");
        answer::json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"error": "unavailable", "error_description": "The check could not be completed; retry shortly."}))
    });
    check_response(answer, &client_copies, cookie, extra).await
}

/// The headers through which a client could describe another request than the one Envoy names:
/// never passed on to the decision.
const DESCRIBING_HEADERS: [&str; 4] = ["x-forwarded-uri", "x-original-uri", "x-forwarded-method", "x-original-method"];

/// The request a check describes — method and path from its HTTP attributes — with the client's
/// headers (pseudo-headers and [`DESCRIBING_HEADERS`] left out; a header that is no valid HTTP
/// header is dropped) and the route's narrowing.
fn described(check: &CheckRequest) -> Result<(OriginalRequest, HeaderMap, Narrowing), Ambiguous> {
    let attributes = check.attributes.as_ref().ok_or(Ambiguous)?;
    let http = attributes.request.as_ref().and_then(|r| r.http.as_ref()).ok_or(Ambiguous)?;
    let method = Method::from_bytes(http.method.as_bytes()).map_err(|_| Ambiguous)?;
    let original = original_request(method, http.path.clone())?;
    let mut headers = HeaderMap::new();
    let mut add = |key: &str, value: &[u8]| {
        if key.starts_with(':') || DESCRIBING_HEADERS.iter().any(|d| key.eq_ignore_ascii_case(d)) {
            return;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    };
    match http.header_map.as_ref().filter(|m| !m.headers.is_empty()) {
        // `encode_raw_headers`: each header line as it came, values as bytes.
        Some(raw) => raw.headers.iter().for_each(|h| add(&h.key, if h.raw_value.is_empty() { h.value.as_bytes() } else { &h.raw_value })),
        None => http.headers.iter().for_each(|(k, v)| add(k, v.as_bytes())),
    }
    Ok((original, headers, Narrowing::from_pairs(&attributes.context_extensions)))
}

/// What becomes of the client's `Cookie` on its way to the app, as on the request path: our
/// cookies (the session's, the sign-in's) never reach the app. `None`: nothing to change (no
/// cookie of ours was sent); `Some(None)`: remove the header (only ours were sent); `Some(Some(v))`:
/// set it to `v`, the client's other cookies.
fn cookie_for_app(app: &App, headers: &HeaderMap) -> Option<Option<HeaderValue>> {
    let mut kept = HeaderMap::new();
    for value in headers.get_all(http::header::COOKIE) {
        kept.append(http::header::COOKIE, value.clone());
    }
    crate::session::cookies::strip_cookies(&mut kept, |name| app.sessions.is_our_cookie(name));
    let before: Vec<&HeaderValue> = headers.get_all(http::header::COOKIE).iter().collect();
    let after: Vec<&HeaderValue> = kept.get_all(http::header::COOKIE).iter().collect();
    if before == after {
        return None;
    }
    let joined = after.iter().map(|v| v.as_bytes()).collect::<Vec<_>>().join(&b"; "[..]);
    Some((!joined.is_empty()).then(|| HeaderValue::from_bytes(&joined)).and_then(Result::ok))
}

/// `answer` (what `/.trousseau/auth` would have answered) as a check response: a 200 lets the
/// request through with its identity headers and without our cookies, anything else is the
/// client's answer.
async fn check_response(answer: Response<Body>, client_copies: &[HeaderName], cookie: Option<Option<HeaderValue>>, extra: &ExtraHeaders) -> CheckResponse {
    let (parts, body) = answer.into_parts();
    if parts.status == StatusCode::OK {
        let mut ok = OkHttpResponse::default();
        for (name, value) in &parts.headers {
            if name == SET_COOKIE {
                // Beside the app's own cookies, never instead of them.
                ok.response_headers_to_add.push(option(name, value, HeaderAppendAction::AppendIfExistsOrAdd));
            } else if is_identity_header(name, extra) {
                ok.headers.push(option(name, value, HeaderAppendAction::OverwriteIfExistsOrAdd));
            }
        }
        ok.headers_to_remove = client_copies.iter().filter(|name| !parts.headers.contains_key(*name)).map(|n| n.as_str().to_string()).collect();
        ok.headers_to_remove.dedup();
        // Envoy sets, then removes: the cookie header is either set or removed, never both.
        match cookie {
            Some(Some(kept)) => ok.headers.push(option(&http::header::COOKIE, &kept, HeaderAppendAction::OverwriteIfExistsOrAdd)),
            Some(None) => ok.headers_to_remove.push(http::header::COOKIE.as_str().to_string()),
            None => {}
        }
        return CheckResponse { status: Some(rpc_status(tonic::Code::Ok)), http_response: Some(HttpResponse::OkResponse(ok)), ..Default::default() };
    }
    // The proxy's own answers are small and in memory.
    let body = body.collect().await.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned()).unwrap_or_default();
    let mut headers = Vec::with_capacity(parts.headers.len());
    for name in parts.headers.keys().filter(|n| *n != http::header::CONTENT_LENGTH) {
        // The first value replaces whatever Envoy's own reply would carry; the others (a second
        // `Set-Cookie`) are added beside it.
        for (i, value) in parts.headers.get_all(name).iter().enumerate() {
            let action = if i == 0 { HeaderAppendAction::OverwriteIfExistsOrAdd } else { HeaderAppendAction::AppendIfExistsOrAdd };
            headers.push(option(name, value, action));
        }
    }
    let code = match parts.status {
        StatusCode::UNAUTHORIZED | StatusCode::FOUND => tonic::Code::Unauthenticated,
        StatusCode::TOO_MANY_REQUESTS => tonic::Code::ResourceExhausted,
        s if s.is_server_error() => tonic::Code::Unavailable,
        _ => tonic::Code::PermissionDenied,
    };
    let denied = DeniedHttpResponse { status: Some(HttpStatus { code: i32::from(parts.status.as_u16()) }), headers, body };
    CheckResponse { status: Some(rpc_status(code)), http_response: Some(HttpResponse::DeniedResponse(denied)), ..Default::default() }
}

/// A header for Envoy to set with `action` (`append_action`, which Envoy releases before 1.22
/// ignore: for them an unset `append` is already an overwrite).
fn option(name: &HeaderName, value: &HeaderValue, action: HeaderAppendAction) -> HeaderValueOption {
    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
    HeaderValueOption {
        header: Some(ProtoHeader { key: name.as_str().to_string(), value, ..Default::default() }),
        append_action: action as i32,
        ..Default::default()
    }
}

fn rpc_status(code: tonic::Code) -> RpcStatus {
    RpcStatus { code: code as i32, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request as AttrRequest};
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;

    fn check(method: &str, path: &str, headers: &[(&str, &str)], extensions: &[(&str, &str)]) -> CheckRequest {
        let http = HttpRequest {
            method: method.into(),
            path: path.into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(AttrRequest { http: Some(http), ..Default::default() }),
                context_extensions: extensions.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_path_and_method_come_from_the_attributes_only() {
        let headers = [(":path", "/public"), ("x-original-uri", "/public"), ("X-Forwarded-Method", "GET"), ("cookie", "a=b"), ("accept", "text/html")];
        let (original, h, narrowing) = described(&check("DELETE", "/admin/x?y=1", &headers, &[("roles", "admin"), ("other", "x")])).unwrap();
        assert_eq!((original.method.as_str(), original.path.as_str(), original.uri.as_str()), ("DELETE", "/admin/x", "/admin/x?y=1"));
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["cookie"], "a=b");
        assert_eq!(narrowing.roles, vec![vec!["admin".to_string()]]);
        for (method, path) in [("GET", "admin"), ("GET", ""), ("G E T", "/"), ("", "/"), ("GET", "/a#b")] {
            assert!(described(&check(method, path, &[], &[])).is_err(), "{method} {path}");
        }
        assert!(described(&CheckRequest::default()).is_err());
    }

    #[tokio::test]
    async fn an_allowed_check_sets_our_headers_and_removes_only_other_spellings() {
        let mut answer = answer::text(StatusCode::OK, "");
        answer.headers_mut().insert("x-trousseau-sub", HeaderValue::from_static("u-1"));
        answer.headers_mut().insert("x-trousseau-org-id", HeaderValue::from_static(""));
        answer.headers_mut().append(SET_COOKIE, HeaderValue::from_static("s=1"));
        let copies = ["x-trousseau-sub", "x_trousseau_sub", "x-trousseau-admin"].map(HeaderName::from_static);
        let response = check_response(answer, &copies, None, &ExtraHeaders::default()).await;
        assert_eq!(response.status.unwrap().code, 0);
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else { panic!("not ok") };
        let set: Vec<(&str, &str)> = ok.headers.iter().map(|o| o.header.as_ref().map(|h| (h.key.as_str(), h.value.as_str())).unwrap()).collect();
        assert_eq!(set, [("x-trousseau-sub", "u-1"), ("x-trousseau-org-id", "")], "identity headers only, empty ones too");
        assert!(ok.headers.iter().all(|o| o.append_action == HeaderAppendAction::OverwriteIfExistsOrAdd as i32));
        assert_eq!(ok.headers_to_remove, ["x_trousseau_sub", "x-trousseau-admin"], "never a header we set");
        assert_eq!(ok.response_headers_to_add[0].header.as_ref().unwrap().value, "s=1");
    }
}
