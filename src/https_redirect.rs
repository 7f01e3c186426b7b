//! `http_redirect_listen`: the plain-http listener beside an HTTPS `listen`. Every request gets a
//! `308` to the same host and path over https — a method and body are kept by a 308, so a form
//! posted to `http://` is posted again to `https://` — except `/.trousseau/healthz`, which load
//! balancers probe over plain http. Nothing else is served here: no session, no app.

use std::future::{ready, Future};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::answer;
use crate::body::Body;
use crate::limits::inflight::InFlight;
use crate::limits::connection::{Connection, ListenerKind};
use crate::limits::listener::{serve_connections, Listening};
use crate::limits::Limits;

/// Serves redirects on `listener` until `shutdown` completes; `https_port` is `public_url`'s
/// port when it is not 443 (the redirect names it).
pub async fn serve(listener: TcpListener, https_port: Option<u16>, limits: Arc<Limits>, shutdown: impl Future<Output = ()>) {
    let handler = move |req: Request<Incoming>, conn: &Arc<Connection>| {
        let flight = InFlight::begin(conn, &req);
        ready(answer_for(&req, https_port).map(|body| flight.respond(body)))
    };
    serve_connections(Listening::plain(listener), limits, ListenerKind::Redirect, handler, shutdown, Duration::from_secs(1), None).await;
}

/// The answer to one request on the plain listener.
pub fn answer_for<B>(req: &Request<B>, https_port: Option<u16>) -> Response<Body> {
    if req.uri().path() == "/.trousseau/healthz" {
        return answer::text(StatusCode::OK, "ok\n");
    }
    let Some(host) = host_of(req) else {
        return answer::text(StatusCode::BAD_REQUEST, "This address serves https only; the request named no valid host.\n");
    };
    let port = https_port.map(|p| format!(":{p}")).unwrap_or_default();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    let Ok(location) = HeaderValue::from_str(&location) else {
        return answer::text(StatusCode::BAD_REQUEST, "This address serves https only.\n");
    };
    let mut r = answer::text(StatusCode::PERMANENT_REDIRECT, "This address serves https only.\n");
    r.headers_mut().insert(header::LOCATION, location);
    r
}

/// The request's host name (from `Host`, else the URI's authority), without its port: a DNS name,
/// an IPv4 address or a bracketed IPv6 address, nothing else (no user info, no path).
fn host_of<B>(req: &Request<B>) -> Option<String> {
    let raw = match req.headers().get(header::HOST) {
        Some(v) => v.to_str().ok()?,
        None => req.uri().authority()?.as_str(),
    };
    let authority: http::uri::Authority = raw.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host();
    let ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty() && host.len() <= 253 && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    ok.then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(host: Option<&str>, uri: &str) -> Response<Body> {
        let mut b = Request::get(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        answer_for(&b.body(()).unwrap(), None)
    }

    #[test]
    fn every_request_goes_to_the_same_host_and_path_over_https() {
        let r = get(Some("App.Example.com:80"), "/reports?year=2026");
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "https://app.example.com/reports?year=2026");
        let r = answer_for(&Request::get("/x").header(header::HOST, "[::1]:8080").body(()).unwrap(), Some(8443));
        assert_eq!(r.headers()[header::LOCATION], "https://[::1]:8443/x");
        assert_eq!(get(Some("app.example.com"), "/.trousseau/healthz").status(), StatusCode::OK);
    }

    #[test]
    fn a_host_that_is_not_a_host_gets_no_redirect() {
        for host in ["evil.example/@x", "user@evil.example", "", "a b", "exa_mple.com", "[::1", "%65vil.example"] {
            let r = get(Some(host), "/");
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{host:?}");
            assert!(r.headers().get(header::LOCATION).is_none());
        }
        assert_eq!(get(None, "/").status(), StatusCode::BAD_REQUEST);
    }
}
