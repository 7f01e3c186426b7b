//! Forward-auth: which request `/.trousseau/auth` is asked about.
//!
//! A gateway in front of the app asks the proxy about each request and describes it in one of
//! three ways: nginx `auth_request` sets `X-Original-Method`/`X-Original-URI`, Traefik and Caddy set
//! `X-Forwarded-Method`/`X-Forwarded-Uri`, and Envoy's HTTP `ext_authz` (with `path_prefix`)
//! appends the original path to ours — `/.trousseau/auth/admin/x` — and sends the original method.
//! Each gateway passes the client's other headers on, so a client can add the family its gateway
//! does not set. The request is therefore described by whichever form is present, and refused as
//! ambiguous when two forms disagree, when one header is given twice, or when a value is unreadable
//! — never replaced by another path (or by `/`).

use http::{HeaderMap, Method, Uri};

/// The path of the forward-auth endpoint; Envoy's form appends the original path to it.
pub const AUTH_PATH: &str = "/.trousseau/auth";

/// The request a gateway asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginalRequest {
    /// Its method.
    pub method: Method,
    /// Its path and query, as described (the sign-in return path is derived from it).
    pub uri: String,
    /// Its path alone: what the route rules judge.
    pub path: String,
}

/// The description cannot be trusted: conflicting, repeated or unreadable headers, or a target
/// that is not a path. Answered 403 `ambiguous_request` (not 400: nginx turns anything but
/// 2xx/401/403 from an auth subrequest into a 500).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the original request is described by conflicting, repeated or unreadable headers")]
pub struct Ambiguous;

/// Works out the original request from the check request's method, target and headers.
pub fn describe(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<OriginalRequest, Ambiguous> {
    let method_header = one_of(headers, "x-forwarded-method", "x-original-method")?;
    let uri_header = one_of(headers, "x-forwarded-uri", "x-original-uri")?;
    let envoy_path = uri.path().strip_prefix(AUTH_PATH).filter(|p| p.starts_with('/'));

    let (method, original) = match envoy_path {
        // Envoy: the target and the method are the original request's own. A header family the
        // client added must say the same, or it is someone trying to describe another request.
        Some(path) => {
            let original = match uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.to_string(),
            };
            if uri_header.is_some_and(|u| u != original) || method_header.is_some_and(|m| m != method.as_str()) {
                return Err(Ambiguous);
            }
            (method.clone(), original)
        }
        None => {
            let method = match method_header {
                Some(m) => Method::from_bytes(m.as_bytes()).map_err(|_| Ambiguous)?,
                None => method.clone(),
            };
            (method, uri_header.unwrap_or("/").to_string())
        }
    };
    original_request(method, original)
}

/// The request described by `method` and `target` (path and query), when the target is a path:
/// what every form of the check — these headers, or Envoy's gRPC attributes
/// ([`crate::grpc_authz`]) — accepts as a description.
pub fn original_request(method: Method, target: String) -> Result<OriginalRequest, Ambiguous> {
    // Browsers never send a fragment, and servers disagree on what a raw `#` in a target means
    // (the end of the path, or a character of it): a described target holding one is refused.
    if !target.starts_with('/') || target.contains('#') {
        return Err(Ambiguous);
    }
    let path = target.split('?').next().unwrap_or_default().to_string();
    Ok(OriginalRequest { method, uri: target, path })
}

/// What a gateway asks of one route beyond the configuration, so that one central proxy can guard
/// routes with different needs: `roles` (the selected organization's role must be listed) and
/// `orgs` (the selected organization, by id or slug, must be listed). Comma-separated lists.
///
/// It can only narrow what the configuration allows, never widen it:
/// [`crate::policy::Policy::authorize_narrowed`] judges it after the configuration has allowed.
/// Each list given is one more requirement — a repeated `roles` must be met as well as the first,
/// so a second copy can never undo one — and an empty list (`roles=`) refuses everyone: a
/// requirement that names nothing fails closed rather than meaning "any".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Narrowing {
    /// Each list: the selected organization's role must be one of it.
    pub roles: Vec<Vec<String>>,
    /// Each list: the selected organization's id or slug must be one of it.
    pub orgs: Vec<Vec<String>>,
}

impl Narrowing {
    /// Every `roles` and `orgs` parameter of a query string the gateway owns (its own auth URL:
    /// nginx's `proxy_pass`, Traefik's `address`) — never the client's query, which gateways
    /// pass on as the original request's. Other parameters are ignored.
    pub fn from_query(query: Option<&str>) -> Narrowing {
        let pairs = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes());
        Narrowing::from_pairs(pairs.map(|(k, v)| (k.into_owned(), v.into_owned())))
    }

    /// The `roles` and `orgs` of key–value pairs (Envoy's per-route `context_extensions`); other
    /// keys are ignored.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Narrowing {
        let mut narrowing = Narrowing::default();
        for (key, value) in pairs {
            let list = || value.as_ref().split(',').map(str::trim).filter(|item| !item.is_empty()).map(String::from).collect();
            match key.as_ref() {
                "roles" => narrowing.roles.push(list()),
                "orgs" => narrowing.orgs.push(list()),
                _ => {}
            }
        }
        narrowing
    }

    /// Whether nothing is asked beyond the configuration.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty() && self.orgs.is_empty()
    }
}

/// The value of whichever header of a family is present: `Ok(None)` when neither is (or both are
/// empty), `Err` when they disagree, when one is repeated, or when a value is not text.
fn one_of<'h>(headers: &'h HeaderMap, a: &str, b: &str) -> Result<Option<&'h str>, Ambiguous> {
    let read = |name: &str| -> Result<Option<&'h str>, Ambiguous> {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(Ambiguous),
            (Some(v), None) if v.is_empty() => Ok(None),
            (Some(v), None) => v.to_str().map(Some).map_err(|_| Ambiguous),
        }
    };
    match (read(a)?, read(b)?) {
        (Some(x), Some(y)) if x != y => Err(Ambiguous),
        (x, y) => Ok(x.or(y)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe_with(method: &str, target: &str, pairs: &[(&str, &str)]) -> Result<OriginalRequest, Ambiguous> {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        describe(&Method::from_bytes(method.as_bytes()).unwrap(), &target.parse().unwrap(), &headers)
    }

    #[test]
    fn each_gateway_form_describes_the_request() {
        let nginx = describe_with("GET", "/.trousseau/auth", &[("x-original-uri", "/a?b=c"), ("x-original-method", "DELETE")]).unwrap();
        assert_eq!((nginx.method.as_str(), nginx.uri.as_str(), nginx.path.as_str()), ("DELETE", "/a?b=c", "/a"));
        let traefik = describe_with("GET", "/.trousseau/auth", &[("x-forwarded-uri", "/x"), ("x-forwarded-method", "POST")]).unwrap();
        assert_eq!((traefik.method.as_str(), traefik.path.as_str()), ("POST", "/x"));
        let envoy = describe_with("PUT", "/.trousseau/auth/admin/x?y=1", &[]).unwrap();
        assert_eq!((envoy.method.as_str(), envoy.uri.as_str(), envoy.path.as_str()), ("PUT", "/admin/x?y=1", "/admin/x"));
        let bare = describe_with("GET", "/.trousseau/auth", &[]).unwrap();
        assert_eq!(bare.path, "/");
    }

    #[test]
    fn narrowing_reads_every_roles_and_orgs_list_and_nothing_else() {
        let n = Narrowing::from_query(Some("rd=/x&roles=admin,%20owner&orgs=hotel-a&roles=admin&other=1"));
        assert_eq!(n.roles, vec![vec!["admin".to_string(), "owner".into()], vec!["admin".into()]]);
        assert_eq!(n.orgs, vec![vec!["hotel-a".to_string()]]);
        // An empty list stays a requirement (that nobody meets); unknown keys are nothing.
        assert_eq!(Narrowing::from_query(Some("roles=&orgs=,")), Narrowing { roles: vec![vec![]], orgs: vec![vec![]] });
        assert!(Narrowing::from_query(Some("rd=/&role=admin&Roles=x")).is_empty());
        assert!(Narrowing::from_query(None).is_empty());
        let n = Narrowing::from_pairs([("roles", "admin"), ("cluster", "x")]);
        assert_eq!((n.roles.len(), n.orgs.len()), (1, 0));
    }

    #[test]
    fn conflicting_or_repeated_descriptions_are_ambiguous() {
        for (method, target, pairs) in [
            ("GET", "/.trousseau/auth", vec![("x-original-uri", "/admin"), ("x-forwarded-uri", "/public")]),
            ("GET", "/.trousseau/auth", vec![("x-original-uri", "/admin"), ("x-original-uri", "/public")]),
            ("GET", "/.trousseau/auth", vec![("x-forwarded-method", "GET"), ("x-original-method", "DELETE")]),
            ("GET", "/.trousseau/auth", vec![("x-forwarded-method", "G E T")]),
            ("GET", "/.trousseau/auth", vec![("x-original-uri", "admin")]),
            ("GET", "/.trousseau/auth", vec![("x-original-uri", "/public#/../admin")]),
            ("GET", "/.trousseau/auth/admin/x", vec![("x-forwarded-uri", "/public/x")]),
            ("DELETE", "/.trousseau/auth/admin/x", vec![("x-forwarded-method", "GET")]),
        ] {
            assert_eq!(describe_with(method, target, &pairs), Err(Ambiguous), "{method} {target} {pairs:?}");
        }
        // Agreeing copies are fine.
        assert!(describe_with("GET", "/.trousseau/auth/admin/x", &[("x-forwarded-uri", "/admin/x")]).is_ok());
    }
}
