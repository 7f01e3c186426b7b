//! Targets for what the request path reads before it decides: the forward-auth description of the
//! original request ([`crate::forward_auth::describe`]) and the route policy's reading of a path
//! and a method ([`crate::policy::Policy`]).
//!
//! The path property is checked against app servers modelled here, independently of the policy's
//! own readings: a servlet container (parameters dropped per segment, then decoded, then dot
//! segments resolved; or decoded first, as Spring does), a WSGI/PHP app (everything decoded, `%2F`
//! included), IIS (also `\` as `/`, without regard to case) and Express (decoded, without regard to
//! case). Whatever one of them routes the path to, the proxy's decision must be at least as strict.

use std::sync::OnceLock;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};

use super::fixtures;
use crate::config::{OrganizationConfig, RoutesConfig};
use crate::forward_auth::{self, Ambiguous, AUTH_PATH};
use crate::identity::Organization;
use crate::util::clock::now_secs;
use crate::policy::{self, Decision, PathPattern, Policy};
use crate::session::Session;

/// The routes every path is judged by: public folders and a file pattern, and rules with roles,
/// methods, an upper-case pattern, an inner wildcard and an email domain.
const ROUTES: &str = "public: [/public/*, /assets/*.css, /healthz]
rules:
  - path: /admin/*
    roles: [admin]
  - path: /reports/*
    methods: [DELETE, GET]
    roles: [admin]
  - path: /Api/*/secret
    roles: [admin]
  - path: /mail/*
    email_domains: [corp.example]
";

/// The public patterns of [`ROUTES`], for the app-side check.
const PUBLIC: [&str; 3] = ["/public/*", "/assets/*.css", "/healthz"];

/// The policy of [`ROUTES`].
fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let routes: RoutesConfig = serde_yaml::from_str(ROUTES).expect("fixture routes");
        Policy::new(&routes, &OrganizationConfig::default())
    })
}

/// A member (role `member`, email at another domain) and an admin (role `admin`, email at
/// `corp.example`): the rules refuse the first what they let the second do.
fn sessions() -> &'static [Session; 2] {
    static SESSIONS: OnceLock<[Session; 2]> = OnceLock::new();
    SESSIONS.get_or_init(|| {
        let with = |role: &str, email: &str| {
            let mut s = fixtures::session(now_secs(), 0);
            let org = Organization { id: "org-1".into(), name: "Org".into(), slug: "org".into(), role: role.into() };
            s.identity.organizations = Some(vec![org]);
            s.identity.email = Some(email.into());
            s.identity.email_verified = Some(true);
            s.org = Some("org-1".into());
            s
        };
        [with("member", "member@elsewhere.example"), with("admin", "boss@corp.example")]
    })
}

/// Methods as clients may spell them; the first byte of an input picks one.
const METHODS: [&str; 10] = ["GET", "get", "HEAD", "head", "DELETE", "delete", "Delete", "POST", "PUT", "OPTIONS"];

/// The input: one byte choosing the method, then the request target as a client sends it. Checks,
/// for both sessions, that the decision is at least as strict as the one each modelled app server's
/// reading of the path gets (a clean path, judged plainly); that a public path is one every model
/// routes into a public pattern; that a method's decision does not depend on its case; and that
/// `HEAD` is judged at least as strictly as `GET`.
pub fn path_rules(data: &[u8]) {
    let Some((&choice, target)) = data.split_first() else { return };
    let method = METHODS[usize::from(choice) % METHODS.len()];
    // What hyper hands the proxy: the path of a valid origin-form target.
    let Ok(uri) = Uri::try_from(target) else { return };
    let path = uri.path();
    if !path.starts_with('/') {
        return;
    }
    let policy = policy();
    let method = Method::from_bytes(method.as_bytes()).expect("a method token");
    let canonical = Method::from_bytes(method.as_str().to_ascii_uppercase().as_bytes()).expect("a method token");

    if policy.is_public(path) {
        assert!(!policy::is_ambiguous(path), "public, yet ambiguous: {path:?}");
        for (model, app_path) in app_readings(path) {
            let Some(app_path) = app_path else { continue };
            let public = PUBLIC.iter().any(|p| {
                let pattern = PathPattern::new(p);
                pattern.matches(&app_path) || (model.case_insensitive && pattern.matches(&app_path.to_ascii_lowercase()))
            });
            assert!(public, "{path:?} is public, but {} routes it to {app_path:?}", model.name);
        }
    }

    for session in sessions() {
        let decision = policy.authorize(session, &method, path);
        assert_eq!(decision, policy.authorize(session, &canonical, path), "{method} and {canonical} differ on {path:?}");
        if canonical == Method::HEAD && decision == Decision::Allow {
            assert_eq!(policy.authorize(session, &Method::GET, path), Decision::Allow, "HEAD allowed where GET is not: {path:?}");
        }
        if decision != Decision::Allow {
            continue;
        }
        for (model, app_path) in app_readings(path) {
            // Only a clean result is judged: a path the model leaves with escapes, separators or
            // parameters in it is another resource to that app, not one a rule names.
            let Some(app_path) = app_path.filter(|p| !policy::is_ambiguous(p)) else { continue };
            let app_decision = policy.authorize(session, &canonical, &app_path);
            assert_eq!(
                app_decision,
                Decision::Allow,
                "{canonical} {path:?} allowed for {:?}, but {} routes it to {app_path:?}, which the rules refuse",
                session.identity.email,
                model.name
            );
        }
    }
}

/// An app server's way of reading a request path.
struct Model {
    name: &'static str,
    case_insensitive: bool,
    read: fn(&str) -> Option<String>,
}

/// The modelled app servers (module doc).
const MODELS: [Model; 5] = [
    Model { name: "a servlet container (Tomcat, Jetty)", case_insensitive: false, read: servlet },
    Model { name: "Spring (decoded, then parameters dropped)", case_insensitive: false, read: spring },
    Model { name: "a WSGI/PHP app", case_insensitive: false, read: wsgi },
    Model { name: "IIS", case_insensitive: true, read: iis },
    Model { name: "Express", case_insensitive: true, read: express },
];

fn app_readings(path: &str) -> impl Iterator<Item = (&'static Model, Option<String>)> + '_ {
    MODELS.iter().map(move |m| (m, (m.read)(path)))
}

fn servlet(path: &str) -> Option<String> {
    decode_all(&drop_parameters(path)).map(|p| resolve_dots(&p))
}

fn spring(path: &str) -> Option<String> {
    decode_all(path).map(|p| resolve_dots(&drop_parameters(&p)))
}

fn wsgi(path: &str) -> Option<String> {
    decode_all(path).map(|p| resolve_dots(&p))
}

fn iis(path: &str) -> Option<String> {
    decode_all(path).map(|p| resolve_dots(&p.replace('\\', "/")).to_ascii_lowercase())
}

fn express(path: &str) -> Option<String> {
    decode_all(path).map(|p| resolve_dots(&p).to_ascii_lowercase())
}

/// Every `%XX` decoded once; `None` when the result is not UTF-8.
fn decode_all(path: &str) -> Option<String> {
    percent_encoding::percent_decode_str(path).decode_utf8().ok().map(|p| p.into_owned())
}

/// Each segment cut at its first `;`.
fn drop_parameters(path: &str) -> String {
    path.split('/').map(|segment| segment.split(';').next().unwrap_or_default()).collect::<Vec<_>>().join("/")
}

/// Dot segments resolved and empty segments dropped, as servers route (RFC 3986 §5.2.4, `//`
/// collapsed); a trailing `/` kept.
fn resolve_dots(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut resolved = String::from("/");
    resolved.push_str(&out.join("/"));
    if path.ends_with('/') && !resolved.ends_with('/') {
        resolved.push('/');
    }
    resolved
}

/// The input: the check request's target on its first line, then header lines `name: value` (raw
/// bytes; unusable names and values are left out, as hyper would refuse them). Checks that an
/// accepted description is a path (no `?` or `#`, starting with `/`) and is exactly what one of the
/// forms says — the Envoy suffix, the one non-empty URI header, or `/` when neither is given —
/// never another path; that a repeated or conflicting header family is ambiguous; and that a
/// method header, when given, is the method judged (or agrees with Envoy's).
pub fn forward_auth_headers(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) = match first.iter().position(|&b| b == b' ') {
        Some(i) => (&first[..i], &first[i + 1..]),
        None => (b"GET".as_slice(), first),
    };
    let Ok(method) = Method::from_bytes(method) else { return };
    let Ok(uri) = Uri::try_from(target) else { return };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(line[colon + 1..].trim_ascii())) else {
            continue;
        };
        headers.append(name, value);
    }

    let result = forward_auth::describe(&method, &uri, &headers);
    let values = |name: &str| -> Vec<&[u8]> { headers.get_all(name).iter().map(HeaderValue::as_bytes).collect() };
    let family = |a: &str, b: &str| -> (usize, Vec<&[u8]>) {
        let all: Vec<&[u8]> = values(a).into_iter().chain(values(b)).collect();
        let repeated = values(a).len().max(values(b).len());
        (repeated, all.into_iter().filter(|v| !v.is_empty()).collect())
    };
    let (uri_repeats, uris) = family("x-forwarded-uri", "x-original-uri");
    let (method_repeats, methods) = family("x-forwarded-method", "x-original-method");
    let disagree = |given: &[&[u8]]| given.windows(2).any(|w| w[0] != w[1]);
    if uri_repeats > 1 || method_repeats > 1 || disagree(&uris) || disagree(&methods) {
        assert_eq!(result, Err(Ambiguous), "repeated or conflicting descriptions were accepted: {headers:?}");
        return;
    }
    let Ok(original) = result else { return };
    assert!(original.path.starts_with('/'), "judged path {:?}", original.path);
    assert!(!original.path.contains(['?', '#']), "judged path {:?}", original.path);
    assert!(original.uri.starts_with(original.path.as_str()));
    let envoy = uri.path().strip_prefix(AUTH_PATH).filter(|p| p.starts_with('/'));
    match (envoy, uris.first()) {
        (Some(suffix), header) => {
            assert_eq!(original.path, suffix, "Envoy's form names the path");
            if let Some(header) = header {
                assert_eq!(*header, original.uri.as_bytes(), "a URI header disagreeing with Envoy's path was accepted");
            }
            assert_eq!(original.method, method, "Envoy's form: the method is the check request's");
        }
        (None, Some(header)) => assert_eq!(*header, original.uri.as_bytes(), "the judged request is not the one described"),
        (None, None) => assert_eq!(original.uri, "/"),
    }
    if let (None, Some(m)) = (envoy, methods.first()) {
        assert_eq!(original.method.as_str().as_bytes(), *m, "the judged method is not the one described");
    }
}

/// `trace_context`: the W3C trace context a client sends ([`crate::trace::RequestTrace::from_headers`]).
/// The input is header lines (`name: value`, `traceparent` and `tracestate` among them). Checks
/// that a trace is continued exactly when there is one `traceparent` and it parses — same trace
/// id, the caller's span as parent, its sampled flag — and otherwise a new trace starts and the
/// caller's `tracestate` goes; that a `tracestate` goes on only alone and within 512 bytes; and that
/// what the app receives is a valid `traceparent` of the proxy's span, read back to the same span.
pub fn trace_context(data: &[u8]) {
    use crate::trace::{RequestTrace, TraceParent, TRACEPARENT, TRACESTATE};
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(line[colon + 1..].trim_ascii())) else {
            continue;
        };
        headers.append(name, value);
    }
    let parents: Vec<&HeaderValue> = headers.get_all(&TRACEPARENT).iter().collect();
    let caller = match parents.as_slice() {
        [one] => TraceParent::parse(one.as_bytes()),
        _ => None,
    };
    for ratio in [0.0, 1.0] {
        let trace = RequestTrace::from_headers(&headers, ratio);
        match caller {
            Some(caller) => {
                assert_eq!(trace.span.trace_id, caller.trace_id, "a valid traceparent is continued");
                assert_eq!(trace.parent, Some(caller.span_id));
                assert_eq!(trace.span.sampled, caller.sampled, "the caller's decision is kept");
                let states: Vec<&HeaderValue> = headers.get_all(&TRACESTATE).iter().collect();
                match (&trace.state, states.as_slice()) {
                    (Some(state), [one]) => assert!(state == *one && state.len() <= 512),
                    (Some(_), _) => panic!("a tracestate went on though there were {}", states.len()),
                    (None, [one]) => assert!(one.len() > 512, "a short, single tracestate was dropped"),
                    (None, _) => {}
                }
            }
            None => {
                assert_eq!(trace.parent, None, "no valid traceparent, no parent");
                assert!(trace.state.is_none(), "a tracestate without a valid traceparent went on");
                assert_eq!(trace.span.sampled, ratio >= 1.0);
            }
        }
        let mut out = headers.clone();
        trace.write(&mut out);
        let sent = out.get_all(&TRACEPARENT).iter().collect::<Vec<_>>();
        assert_eq!(sent.len(), 1, "one traceparent to the app");
        assert_eq!(sent[0].len(), 55);
        assert_eq!(TraceParent::parse(sent[0].as_bytes()), Some(trace.span), "the app reads the proxy's span");
        assert!(out.get_all(&TRACESTATE).iter().count() <= 1);
    }
    if let Ok(value) = std::str::from_utf8(data) {
        if let Some(parsed) = TraceParent::parse(value.trim().as_bytes()) {
            assert_eq!(TraceParent::parse(parsed.header().as_bytes()), Some(parsed), "written back, read the same");
        }
    }
}
