//! Who the user is, and how the app learns it.
//!
//! [`Identity`] is the typed form of Trousseau's ID-token claims (all three scope tiers). This module
//! also turns it into what the upstream app receives: the signed `X-Trousseau-Jwt-Assertion`
//! (ES256, keys published at `/.trousseau/jwks.json`) and the plain, percent-encoded
//! `X-Trousseau-*` headers. Spoofed copies of those headers are removed by [`strip_spoofed`] before
//! anything else looks at a request.


pub use crate::claims::{Identity, Organization};
pub use signer::{generate_pkcs8_pem, IdentityError, Signer};

mod signer;

// ---------------------------------------------------------------------------------------------------
// What the upstream app receives.
// ---------------------------------------------------------------------------------------------------

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::session::Session;

/// The signed identity assertion (compact JWS, ES256), verifiable with `/.trousseau/jwks.json`.
pub const X_TROUSSEAU_JWT_ASSERTION: HeaderName =
    HeaderName::from_static("x-trousseau-jwt-assertion");
/// `sub`.
pub const X_TROUSSEAU_SUB: HeaderName = HeaderName::from_static("x-trousseau-sub");
/// The subject of the client's certificate, with mutual TLS (`tls.client_ca_file`).
pub const X_TROUSSEAU_CLIENT_SUBJECT: HeaderName = HeaderName::from_static("x-trousseau-client-subject");
/// `email`.
pub const X_TROUSSEAU_EMAIL: HeaderName = HeaderName::from_static("x-trousseau-email");
/// `name`.
pub const X_TROUSSEAU_NAME: HeaderName = HeaderName::from_static("x-trousseau-name");
/// `trousseau_user_id`.
pub const X_TROUSSEAU_USER_ID: HeaderName = HeaderName::from_static("x-trousseau-user-id");
/// `locale`.
pub const X_TROUSSEAU_LOCALE: HeaderName = HeaderName::from_static("x-trousseau-locale");
/// Selected organization's id.
pub const X_TROUSSEAU_ORG_ID: HeaderName = HeaderName::from_static("x-trousseau-org-id");
/// Selected organization's slug.
pub const X_TROUSSEAU_ORG_SLUG: HeaderName = HeaderName::from_static("x-trousseau-org-slug");
/// Selected organization's display name.
pub const X_TROUSSEAU_ORG_NAME: HeaderName = HeaderName::from_static("x-trousseau-org-name");
/// The user's role in the selected organization.
pub const X_TROUSSEAU_ORG_ROLE: HeaderName = HeaderName::from_static("x-trousseau-org-role");
/// Trousseau's access token, only with `identity.pass_access_token`.
pub const X_TROUSSEAU_ACCESS_TOKEN: HeaderName =
    HeaderName::from_static("x-trousseau-access-token");

/// The prefix every identity header shares; anything a client sends under it is a spoof.
const SPOOF_PREFIX: &[u8] = b"x-trousseau-";

/// True when `name`, lower-cased with `_` read as `-`, starts with `x-trousseau-`.
fn is_spoofable(name: &[u8]) -> bool {
    name.len() >= SPOOF_PREFIX.len()
        && name.iter().zip(SPOOF_PREFIX).all(|(&b, &p)| {
            let b = if b == b'_' {
                b'-'
            } else {
                b.to_ascii_lowercase()
            };
            b == p
        })
}

/// Removes every header a client may have sent to impersonate us: any name that starts with
/// `X-Trousseau-` in any case, `_` counting as `-` (`x_trousseau_sub` reaches many apps as
/// `X-Trousseau-Sub`: CGI, PHP, Django and Rack all fold `-` and `_` together).
///
/// Runs on every request, public routes included. One pass and no allocation when nothing matches.
pub fn strip_spoofed(headers: &mut HeaderMap) {
    if !headers
        .keys()
        .any(|name| is_spoofable(name.as_str().as_bytes()))
    {
        return;
    }
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_spoofable(name.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(&name);
    }
}

/// Whether a client-sent header of this name poses as one of ours: what [`strip_spoofed`] and
/// [`ExtraHeaders::strip`] remove, asked of one name (a gateway told which of the client's headers
/// to drop, [`crate::grpc_authz`]).
pub fn is_identity_header(name: &HeaderName, extra: &ExtraHeaders) -> bool {
    is_spoofable(name.as_str().as_bytes()) || extra.covers(name)
}

/// A header value for a claim: visible ASCII and inner spaces as they are; every other byte of the
/// UTF-8 text, `%` itself, and a leading or trailing space percent-encoded (`Hôtel` → `H%C3%B4tel`).
/// The result can never carry CR, LF or NUL. Never panics.
pub fn header_value(text: &str) -> HeaderValue {
    let bytes = text.as_bytes();
    let last = bytes.len().saturating_sub(1);
    let keep = |i: usize, b: u8| match b {
        b' ' => i != 0 && i != last,
        b'%' => false,
        _ => (0x21..=0x7E).contains(&b),
    };
    if bytes.iter().enumerate().all(|(i, &b)| keep(i, b)) {
        if let Ok(value) = HeaderValue::from_str(text) {
            return value;
        }
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for (i, &b) in bytes.iter().enumerate() {
        if keep(i, b) {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
    // Only visible ASCII and inner spaces are left, which a header value always accepts.
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// How assertions are minted, from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssertionSettings {
    /// `iss`: the proxy's public URL.
    pub issuer: String,
    /// `aud`: `identity.audience`, by default the OIDC client id.
    pub audience: String,
    /// `exp - iat`.
    pub ttl: Duration,
}

/// Most sessions whose assertion is kept at once.
const ASSERTION_CACHE_CAPACITY: u64 = 100_000;

/// The cache key: whatever changes the claims. `updated_at_ms` moves whenever the identity does.
type AssertionKey = (String, u64, Option<String>);

/// Mints the `X-Trousseau-Jwt-Assertion` of a session, cached: an assertion is reused for half its
/// lifetime, so every one handed out still has at least `ttl / 2` to live, and signing (≈ 30 µs)
/// happens once per session per `ttl / 2`, not once per request.
pub struct Assertions {
    signer: Arc<Signer>,
    settings: AssertionSettings,
    cache: Option<moka::sync::Cache<AssertionKey, Arc<Minted>, crate::util::FastHash>>,
}

/// What the app receives for one state of a session, ready to insert: the signed assertion and the
/// plain claim headers. Built once per cache entry, so a request pays a lookup and a few header
/// insertions instead of percent-encoding and allocating ten values (~8% of a proxied request).
struct Minted {
    assertion: HeaderValue,
    /// The plain headers of the claims, `None` when the claim is absent (the header is removed).
    claims: [(HeaderName, Option<HeaderValue>); 9],
}

impl std::fmt::Debug for Assertions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertions")
            .field("signer", &self.signer)
            .field("settings", &self.settings)
            .finish()
    }
}

/// The JWT claims of an assertion. Absent claims are left out, never empty strings or null.
#[derive(serde::Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    given_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    family_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    picture: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trousseau_user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locale: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    organizations: Option<&'a [Organization]>,
    /// Set, to their number, when the organizations were left out ([`ASSERTION_ORGANIZATIONS_BUDGET`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    organizations_omitted: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    org: Option<&'a Organization>,
}

/// The most bytes (as JSON, about) the `organizations` claim may add to an assertion; past it the
/// assertion carries `organizations_omitted` (their number) instead, and the selected `org` as
/// always. Identity headers travel with every request, and in forward-auth nginx takes the whole
/// answer's headers in one 4 KB buffer (`proxy_buffer_size`): 200 organizations would be 40 KB.
pub const ASSERTION_ORGANIZATIONS_BUDGET: usize = 640;

/// The organizations an assertion carries, or how many were left out. Public for the fuzz
/// targets ([`crate::fuzz`]).
#[doc(hidden)]
pub fn organizations_claim(organizations: Option<&[Organization]>) -> (Option<&[Organization]>, Option<usize>) {
    let Some(orgs) = organizations else { return (None, None) };
    let bytes: usize = orgs.iter().map(Organization::approx_size).sum();
    if bytes <= ASSERTION_ORGANIZATIONS_BUDGET {
        (Some(orgs), None)
    } else {
        (None, Some(orgs.len()))
    }
}

/// A claim that is present and not empty.
fn present(claim: &Option<String>) -> Option<&str> {
    claim.as_deref().filter(|s| !s.is_empty())
}

use crate::util::clock::now_secs as unix_now;

impl Assertions {
    /// Assertions signed by `signer` with these settings.
    pub fn new(signer: Arc<Signer>, settings: AssertionSettings) -> Assertions {
        let keep = settings.ttl / 2;
        // Below two seconds, reuse would hand out nearly expired assertions: sign every time.
        let cache = (keep >= Duration::from_secs(1)).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(ASSERTION_CACHE_CAPACITY)
                .time_to_live(keep)
                .build_with_hasher(crate::util::FastHash::default())
        });
        Assertions {
            signer,
            settings,
            cache,
        }
    }

    /// The signer, e.g. to serve its JWKS.
    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    /// The `X-Trousseau-Jwt-Assertion` value for `session`, from the cache when one with at least half
    /// its life left exists.
    pub fn assertion_for(&self, session: &Session) -> HeaderValue {
        self.minted(session).assertion.clone()
    }

    /// Sets the identity headers of `session` exactly as [`insert_identity_headers`] does with
    /// [`Assertions::assertion_for`], the claim headers coming from the same cache entry.
    pub fn insert_identity_headers(&self, headers: &mut HeaderMap, session: &Session, pass_access_token: bool) {
        let minted = self.minted(session);
        set_identity_headers(headers, &minted.claims, session, minted.assertion.clone(), pass_access_token);
    }

    fn minted(&self, session: &Session) -> Arc<Minted> {
        match &self.cache {
            Some(cache) => {
                let key = (
                    session.id.clone(),
                    session.updated_at_ms,
                    session.org.clone(),
                );
                cache.get_with(key, || self.mint(session))
            }
            None => self.mint(session),
        }
    }

    fn mint(&self, session: &Session) -> Arc<Minted> {
        Arc::new(Minted { assertion: self.sign(session), claims: claim_headers(session) })
    }

    fn sign(&self, session: &Session) -> HeaderValue {
        let identity = &session.identity;
        let iat = unix_now();
        let (organizations, organizations_omitted) = organizations_claim(identity.organizations.as_deref());
        let claims = AssertionClaims {
            iss: &self.settings.issuer,
            aud: &self.settings.audience,
            iat,
            exp: iat.saturating_add(self.settings.ttl.as_secs()),
            sub: &identity.sub,
            email: present(&identity.email),
            email_verified: identity.email_verified,
            name: present(&identity.name),
            given_name: present(&identity.given_name),
            family_name: present(&identity.family_name),
            picture: present(&identity.picture),
            trousseau_user_id: present(&identity.trousseau_user_id),
            locale: present(&identity.locale),
            organizations,
            organizations_omitted,
            org: session.selected_organization(),
        };
        // A compact JWS is base64url and dots only: always a valid header value.
        HeaderValue::from_str(&self.signer.sign(&claims))
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// Sets the identity headers the app receives for `session`: the assertion, the plain headers of the
/// claims present (percent-encoded by [`header_value`]) and, when `pass_access_token` is on and the
/// session has one, the access token. Plain headers of absent claims are removed, so afterwards the
/// request carries exactly what the session says, whatever it carried before.
pub fn insert_identity_headers(
    headers: &mut HeaderMap,
    session: &Session,
    assertion: HeaderValue,
    pass_access_token: bool,
) {
    set_identity_headers(headers, &claim_headers(session), session, assertion, pass_access_token);
}

/// The plain claim headers of `session` (all but the access token), percent-encoded.
fn claim_headers(session: &Session) -> [(HeaderName, Option<HeaderValue>); 9] {
    let identity = &session.identity;
    let org = session.selected_organization();
    let value = |claim: Option<&str>| claim.filter(|v| !v.is_empty()).map(header_value);
    [
        (X_TROUSSEAU_SUB, value(Some(identity.sub.as_str()))),
        (X_TROUSSEAU_EMAIL, value(present(&identity.email))),
        (X_TROUSSEAU_NAME, value(present(&identity.name))),
        (X_TROUSSEAU_USER_ID, value(present(&identity.trousseau_user_id))),
        (X_TROUSSEAU_LOCALE, value(present(&identity.locale))),
        (X_TROUSSEAU_ORG_ID, value(org.map(|o| o.id.as_str()))),
        (X_TROUSSEAU_ORG_SLUG, value(org.map(|o| o.slug.as_str()))),
        (X_TROUSSEAU_ORG_NAME, value(org.map(|o| o.name.as_str()))),
        (X_TROUSSEAU_ORG_ROLE, value(org.map(|o| o.role.as_str()))),
    ]
}

/// Inserts `claims` (removing the absent ones), the access token when passed, then the assertion.
fn set_identity_headers(
    headers: &mut HeaderMap,
    claims: &[(HeaderName, Option<HeaderValue>)],
    session: &Session,
    assertion: HeaderValue,
    pass_access_token: bool,
) {
    for (name, value) in claims {
        match value {
            Some(value) => {
                headers.insert(name.clone(), value.clone());
            }
            None => {
                headers.remove(name);
            }
        }
    }
    match present(&session.access_token).filter(|_| pass_access_token) {
        Some(token) => {
            headers.insert(X_TROUSSEAU_ACCESS_TOKEN, header_value(token));
        }
        None => {
            headers.remove(X_TROUSSEAU_ACCESS_TOKEN);
        }
    }
    headers.insert(X_TROUSSEAU_JWT_ASSERTION, assertion);
}

/// Gives every identity header `headers` lacks an empty value: the claim headers, the assertion,
/// the extra headers and, when passed, the access token. A forward-auth answer must name each of
/// them, because gateways that copy headers from it replace only the ones it names and would
/// otherwise forward the client's own copy.
pub fn name_absent_headers(headers: &mut HeaderMap, extra: &ExtraHeaders, pass_access_token: bool) {
    let mut name_it = |name: &HeaderName| {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), HeaderValue::from_static(""));
        }
    };
    let claims = [
        X_TROUSSEAU_SUB,
        X_TROUSSEAU_EMAIL,
        X_TROUSSEAU_NAME,
        X_TROUSSEAU_USER_ID,
        X_TROUSSEAU_LOCALE,
        X_TROUSSEAU_ORG_ID,
        X_TROUSSEAU_ORG_SLUG,
        X_TROUSSEAU_ORG_NAME,
        X_TROUSSEAU_ORG_ROLE,
        X_TROUSSEAU_JWT_ASSERTION,
    ];
    claims.iter().for_each(&mut name_it);
    if pass_access_token {
        name_it(&X_TROUSSEAU_ACCESS_TOKEN);
    }
    extra.names().for_each(name_it);
}

/// A claim an extra header carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// `sub`.
    Sub,
    /// `email`.
    Email,
    /// `name`.
    Name,
    /// `given_name`.
    GivenName,
    /// `family_name`.
    FamilyName,
    /// `picture`.
    Picture,
    /// `trousseau_user_id`.
    UserId,
    /// `locale`.
    Locale,
    /// The selected organization's id.
    OrgId,
    /// The selected organization's slug.
    OrgSlug,
    /// The selected organization's name.
    OrgName,
    /// The role in the selected organization.
    OrgRole,
    /// Every organization as `slug` and `slug:role`, comma-separated (oauth2-proxy groups).
    GroupsComma,
    /// The same, `|`-separated (Authentik's outpost).
    GroupsPipe,
}

impl Claim {
    /// Parses a claim name as written in `identity.headers`.
    pub fn parse(name: &str) -> Option<Claim> {
        Some(match name {
            "sub" => Claim::Sub,
            "email" => Claim::Email,
            "name" => Claim::Name,
            "given_name" => Claim::GivenName,
            "family_name" => Claim::FamilyName,
            "picture" => Claim::Picture,
            "trousseau_user_id" => Claim::UserId,
            "locale" => Claim::Locale,
            "org.id" => Claim::OrgId,
            "org.slug" => Claim::OrgSlug,
            "org.name" => Claim::OrgName,
            "org.role" => Claim::OrgRole,
            "groups" => Claim::GroupsComma,
            _ => return None,
        })
    }

    fn value(self, session: &Session) -> Option<String> {
        let id = &session.identity;
        let org = session.selected_organization();
        let groups = |sep: &str| {
            let orgs = id.organizations.as_deref().unwrap_or(&[]);
            let mut parts = Vec::with_capacity(orgs.len() * 2);
            for o in orgs {
                parts.push(o.slug.clone());
                parts.push(format!("{}:{}", o.slug, o.role));
            }
            (!parts.is_empty()).then(|| parts.join(sep))
        };
        match self {
            Claim::Sub => Some(id.sub.clone()),
            Claim::Email => id.email.clone(),
            Claim::Name => id.name.clone(),
            Claim::GivenName => id.given_name.clone(),
            Claim::FamilyName => id.family_name.clone(),
            Claim::Picture => id.picture.clone(),
            Claim::UserId => id.trousseau_user_id.clone(),
            Claim::Locale => id.locale.clone(),
            Claim::OrgId => org.map(|o| o.id.clone()),
            Claim::OrgSlug => org.map(|o| o.slug.clone()),
            Claim::OrgName => org.map(|o| o.name.clone()),
            Claim::OrgRole => org.map(|o| o.role.clone()),
            Claim::GroupsComma => groups(","),
            Claim::GroupsPipe => groups("|"),
        }
    }
}

/// Header names for apps written for another proxy (`identity.headers_preset`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadersPreset {
    /// Ours only (`X-Trousseau-*`). An empty value means this too, as it always has.
    #[default]
    #[serde(alias = "")]
    Trousseau,
    /// oauth2-proxy's `X-Forwarded-User`, `-Email`, `-Preferred-Username`, `-Groups`.
    #[serde(rename = "oauth2-proxy")]
    Oauth2Proxy,
    /// Authentik's outpost headers, `X-Authentik-*`.
    Authentik,
}

/// Header names apps written for another proxy expect (`identity.headers_preset`) plus custom
/// header → claim mappings (`identity.headers`). Client-sent copies of every one of them are
/// stripped like `X-Trousseau-*`.
#[derive(Clone, Debug, Default)]
pub struct ExtraHeaders {
    headers: Vec<(HeaderName, Claim)>,
}

impl ExtraHeaders {
    /// Compiles a preset (`trousseau`, `oauth2-proxy`, `authentik`) and custom mappings. On error:
    /// the config key and what is wrong.
    pub fn new(
        preset: HeadersPreset,
        custom: &std::collections::BTreeMap<String, String>,
    ) -> Result<ExtraHeaders, (&'static str, String)> {
        let mut headers: Vec<(HeaderName, Claim)> = Vec::new();
        let named = |pairs: &[(&'static str, Claim)]| -> Vec<(HeaderName, Claim)> {
            pairs.iter().map(|(n, c)| (HeaderName::from_static(n), *c)).collect()
        };
        match preset {
            HeadersPreset::Trousseau => {}
            HeadersPreset::Oauth2Proxy => headers.extend(named(&[
                ("x-forwarded-user", Claim::Sub),
                ("x-forwarded-email", Claim::Email),
                ("x-forwarded-preferred-username", Claim::Email),
                ("x-forwarded-groups", Claim::GroupsComma),
            ])),
            HeadersPreset::Authentik => headers.extend(named(&[
                ("x-authentik-username", Claim::Email),
                ("x-authentik-email", Claim::Email),
                ("x-authentik-uid", Claim::Sub),
                ("x-authentik-name", Claim::Name),
                ("x-authentik-groups", Claim::GroupsPipe),
            ])),
        }
        for (name, claim) in custom {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ("identity.headers", format!("`{name}` is not a header name")))?;
            let lower = header.as_str().replace('_', "-");
            if lower.starts_with("x-trousseau-") || matches!(lower.as_str(), "host" | "cookie" | "authorization" | "connection" | "content-length" | "transfer-encoding") {
                return Err(("identity.headers", format!("`{name}` cannot be used for a claim")));
            }
            let claim = Claim::parse(claim).ok_or((
                "identity.headers",
                format!("`{name}: {claim}`: unknown claim; use sub, email, name, given_name, family_name, picture, trousseau_user_id, locale, org.id, org.slug, org.name, org.role or groups"),
            ))?;
            headers.push((header, claim));
        }
        Ok(ExtraHeaders { headers })
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// How many headers these are.
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// The header names, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers.iter().map(|(name, _)| name)
    }

    /// Removes client-sent copies (also spelled with `_`).
    pub fn strip(&self, headers: &mut HeaderMap) {
        if self.headers.is_empty() {
            return;
        }
        let doomed: Vec<HeaderName> = headers.keys().filter(|k| self.covers(k)).cloned().collect();
        for name in doomed {
            headers.remove(name);
        }
    }

    /// Whether `name` is one of these headers, in either spelling (`_` read as `-`).
    pub fn covers(&self, name: &HeaderName) -> bool {
        if self.headers.is_empty() {
            return false;
        }
        let normalized = name.as_str().replace('_', "-");
        self.headers.iter().any(|(ours, _)| ours.as_str() == normalized)
    }

    /// Sets the headers for this session (absent claims: no header).
    pub fn insert(&self, headers: &mut HeaderMap, session: &Session) {
        for (name, claim) in &self.headers {
            match claim.value(session).filter(|v| !v.is_empty()) {
                Some(v) => {
                    headers.insert(name.clone(), header_value(&v));
                }
                None => {
                    headers.remove(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::digest;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde_json::{json, Value};

    fn org(n: u8, role: &str) -> Organization {
        Organization {
            id: format!("018cc251-f400-78cc-8e0c-000fe440ee{n:02x}"),
            name: format!("Hôtel Numéro {n}"),
            slug: format!("hotel-{n}"),
            role: role.into(),
        }
    }

    fn session() -> Session {
        Session {
            id: "c2Vzc2lvbi1pZC0xMjM0NQ".into(),
            identity: Identity {
                sub: "a1b2c3d4-e5f6-7890-abcd-ef1234567890".into(),
                email: Some("jean.dupont@hotel.com".into()),
                email_verified: Some(true),
                name: Some("Jean Dupont".into()),
                given_name: Some("Jean".into()),
                family_name: Some("Dupont".into()),
                picture: None,
                trousseau_user_id: Some("018cc251-f400-78cc-8e0c-000fe440ee40".into()),
                locale: Some("fr-FR".into()),
                organizations: Some(vec![org(1, "admin"), org(2, "member")]),
            },
            org: Some(org(2, "member").id),
            sid: Some("f".repeat(64)),
            created_at: 1_712_399_700,
            updated_at_ms: 1_712_399_700_000,
            expires_at: 1_712_400_000,
            token_lifetime: 0,
            refresh_token: Some("r".repeat(128)),
            access_token: Some("opaque-access-token".into()),
            id_token: None,
            organizations_aside: None,
        }
    }

    fn settings(ttl: u64) -> AssertionSettings {
        AssertionSettings {
            issuer: "https://app.example.com".into(),
            audience: "your-slug-oidc".into(),
            ttl: Duration::from_secs(ttl),
        }
    }

    /// Verifies a compact JWS against a JWKS document the way an app would; returns its claims.
    fn verify(jws: &str, jwks: &[u8]) -> Value {
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "JWT");
        let jwks: Value = serde_json::from_slice(jwks).unwrap();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == header["kid"])
            .expect("kid in JWKS");
        assert_eq!(
            (&jwk["kty"], &jwk["crv"], &jwk["alg"], &jwk["use"]),
            (
                &json!("EC"),
                &json!("P-256"),
                &json!("ES256"),
                &json!("sig")
            )
        );
        // The signature, with an implementation that is not ours (jsonwebtoken), as an app's.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.validate_aud = false;
        // Some of these JWSs are made of test claims without `exp`; one that has it is checked.
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(jws, &key, &validation).expect("signature verifies").claims
    }

    #[test]
    fn spoofed_identity_headers_are_stripped_in_any_case_and_with_underscores() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("X-Trousseau-Sub", "attacker"),
            ("x-TROUSSEAU-email", "ceo@victim.example"),
            ("x_trousseau_sub", "attacker"),
            ("X_Trousseau-Org_Role", "admin"),
            ("x-trousseau-jwt-assertion", "forged"),
            ("X-Trousseauish", "kept"),
            ("x-trousseau", "kept"),
            ("x-other-trousseau-sub", "kept"),
            ("accept", "text/html"),
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        headers.append("x-trousseau-sub", HeaderValue::from_static("second copy"));
        strip_spoofed(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "accept",
                "x-other-trousseau-sub",
                "x-trousseau",
                "x-trousseauish"
            ]
        );

        // Nothing to strip: nothing changes.
        let before = headers.clone();
        strip_spoofed(&mut headers);
        assert_eq!(headers, before);
    }

    #[test]
    fn header_values_are_percent_encoded_and_never_carry_line_breaks() {
        let value = header_value("Hôtel\r\nX: y");
        assert_eq!(value, "H%C3%B4tel%0D%0AX: y");
        assert!(!value
            .as_bytes()
            .iter()
            .any(|&b| b == b'\r' || b == b'\n' || b == 0));
        assert_eq!(header_value("Jean Dupont"), "Jean Dupont");
        assert_eq!(header_value("100% sûr"), "100%25 s%C3%BBr");
        assert_eq!(header_value(" padded "), "%20padded%20");
        assert_eq!(header_value("tab\there\0\x7f"), "tab%09here%00%7F");
        assert_eq!(header_value(""), "");
        assert_eq!(header_value("日本"), "%E6%97%A5%E6%9C%AC");
        // Decoding gives the text back.
        let decoded = percent_encoding::percent_decode(value.as_bytes())
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, "Hôtel\r\nX: y");
    }

    #[test]
    fn signed_assertion_verifies_with_the_published_key_and_carries_exactly_the_claims() {
        let signer = Arc::new(Signer::generate());
        let assertions = Assertions::new(signer.clone(), settings(60));
        let session = session();
        let value = assertions.assertion_for(&session);
        let claims = verify(value.to_str().unwrap(), &signer.jwks_json());

        let iat = claims["iat"].as_u64().unwrap();
        assert!(iat.abs_diff(unix_now()) <= 2);
        assert_eq!(claims["exp"].as_u64().unwrap(), iat + 60);
        let mut expected = json!({
            "iss": "https://app.example.com",
            "aud": "your-slug-oidc",
            "sub": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
            "email": "jean.dupont@hotel.com",
            "email_verified": true,
            "name": "Jean Dupont",
            "given_name": "Jean",
            "family_name": "Dupont",
            "trousseau_user_id": "018cc251-f400-78cc-8e0c-000fe440ee40",
            "locale": "fr-FR",
            "organizations": [
                {"id": org(1, "").id, "name": "Hôtel Numéro 1", "slug": "hotel-1", "role": "admin"},
                {"id": org(2, "").id, "name": "Hôtel Numéro 2", "slug": "hotel-2", "role": "member"},
            ],
            "org": {"id": org(2, "").id, "name": "Hôtel Numéro 2", "slug": "hotel-2", "role": "member"},
        });
        expected["iat"] = json!(iat);
        expected["exp"] = json!(iat + 60);
        // `picture` is absent (None), not "" or null.
        assert_eq!(claims, expected);
    }

    #[test]
    fn claims_the_scopes_did_not_grant_are_absent() {
        let assertions = Assertions::new(Arc::new(Signer::generate()), settings(60));
        let mut session = session();
        session.identity = Identity {
            sub: "only-openid".into(),
            email: Some(String::new()), // an empty string never becomes a claim
            ..Identity::default()
        };
        session.org = None;
        let jws = assertions.assertion_for(&session);
        let claims = verify(jws.to_str().unwrap(), &assertions.signer().jwks_json());
        let mut names: Vec<&str> = claims
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["aud", "exp", "iat", "iss", "sub"]);
    }

    #[test]
    fn assertions_are_cached_per_session_version_and_organization() {
        let assertions = Assertions::new(Arc::new(Signer::generate()), settings(60));
        let mut session = session();
        let first = assertions.assertion_for(&session);
        assert_eq!(assertions.assertion_for(&session), first);

        session.updated_at_ms += 1;
        let refreshed = assertions.assertion_for(&session);
        assert_ne!(refreshed, first);
        assert_eq!(assertions.assertion_for(&session), refreshed);

        session.org = Some(org(1, "admin").id);
        let switched = assertions.assertion_for(&session);
        assert_ne!(switched, refreshed);
        let claims = verify(switched.to_str().unwrap(), &assertions.signer().jwks_json());
        assert_eq!(claims["org"]["role"], "admin");

        // A ttl too short to halve is signed every time, never served stale.
        let uncached = Assertions::new(Arc::new(Signer::generate()), settings(1));
        assert_ne!(
            uncached.assertion_for(&session),
            uncached.assertion_for(&session)
        );
    }

    #[test]
    fn keys_load_from_pem_first_signs_and_all_are_published() {
        let (a, b) = (generate_pkcs8_pem(), generate_pkcs8_pem());
        assert!(
            a.starts_with("-----BEGIN PRIVATE KEY-----\n")
                && a.ends_with("-----END PRIVATE KEY-----\n")
        );
        let signer = Signer::from_pem(&[b.clone(), a.clone()]).unwrap();
        let signer_a = Signer::from_pem(std::slice::from_ref(&a)).unwrap();
        let signer_b = Signer::from_pem(std::slice::from_ref(&b)).unwrap();
        assert_eq!(signer.kid(), signer_b.kid());
        assert_ne!(signer_a.kid(), signer_b.kid());

        let jwks: Value = serde_json::from_slice(&signer.jwks_json()).unwrap();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, [signer_b.kid(), signer_a.kid()]);

        // Rotation: what the old key signed still verifies against the new key set.
        let old_token = signer_a.sign(&json!({"sub": "x"}));
        assert_eq!(verify(&old_token, &signer.jwks_json())["sub"], "x");
        // Both keys in one file, and the same key twice, work too.
        let both = Signer::from_pem(&[format!("{b}{a}"), a.clone()]).unwrap();
        assert_eq!(both.jwks_json(), signer.jwks_json());
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 7638 §3: SHA-256 over the required members (crv, kty, x, y) in lexicographic order,
        // no whitespace; recomputed here from the published JWK the way a verifier library does.
        let signer = Signer::generate();
        let jwks: Value = serde_json::from_slice(&signer.jwks_json()).unwrap();
        let jwk = &jwks["keys"][0];
        let canonical =
            json!({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]}).to_string();
        let expected =
            URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()));
        assert_eq!(jwk["kid"], expected.as_str());
        assert_eq!(signer.kid(), expected);
    }

    #[test]
    fn bad_keys_are_refused_with_their_position() {
        assert!(matches!(
            Signer::from_pem(&[]),
            Err(IdentityError::NoSigningKey)
        ));
        let good = generate_pkcs8_pem();
        let err = Signer::from_pem(&[good.clone(), "just text".into()]).unwrap_err();
        assert!(
            matches!(err, IdentityError::NoKeyInPem { index: 1 }),
            "{err}"
        );
        let truncated = good.replace("-----END PRIVATE KEY-----\n", "");
        assert!(matches!(
            Signer::from_pem(&[truncated]),
            Err(IdentityError::Pem { index: 0, .. })
        ));
        let not_a_key =
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_string();
        let err = Signer::from_pem(&[not_a_key]).unwrap_err();
        assert!(
            matches!(err, IdentityError::NotEs256 { index: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("#0"));
    }

    #[test]
    fn identity_headers_carry_present_claims_only() {
        let mut headers = HeaderMap::new();
        headers.insert(X_TROUSSEAU_LOCALE, HeaderValue::from_static("stale"));
        let mut session = session();
        session.identity.locale = None;
        insert_identity_headers(
            &mut headers,
            &session,
            HeaderValue::from_static("jws"),
            false,
        );
        assert_eq!(
            headers[X_TROUSSEAU_SUB],
            "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
        );
        assert_eq!(headers[X_TROUSSEAU_EMAIL], "jean.dupont@hotel.com");
        assert_eq!(headers[X_TROUSSEAU_NAME], "Jean Dupont");
        assert_eq!(
            headers[X_TROUSSEAU_USER_ID],
            "018cc251-f400-78cc-8e0c-000fe440ee40"
        );
        assert_eq!(headers[X_TROUSSEAU_ORG_ID], org(2, "").id.as_str());
        assert_eq!(headers[X_TROUSSEAU_ORG_SLUG], "hotel-2");
        assert_eq!(headers[X_TROUSSEAU_ORG_NAME], "H%C3%B4tel Num%C3%A9ro 2");
        assert_eq!(headers[X_TROUSSEAU_ORG_ROLE], "member");
        assert_eq!(headers[X_TROUSSEAU_JWT_ASSERTION], "jws");
        assert!(headers.get(X_TROUSSEAU_LOCALE).is_none());
        assert!(headers.get(X_TROUSSEAU_ACCESS_TOKEN).is_none());

        insert_identity_headers(
            &mut headers,
            &session,
            HeaderValue::from_static("jws"),
            true,
        );
        assert_eq!(headers[X_TROUSSEAU_ACCESS_TOKEN], "opaque-access-token");

        // No organization selected: no org headers.
        session.org = None;
        insert_identity_headers(
            &mut headers,
            &session,
            HeaderValue::from_static("jws"),
            false,
        );
        assert!(
            headers.get(X_TROUSSEAU_ORG_ID).is_none()
                && headers.get(X_TROUSSEAU_ORG_ROLE).is_none()
        );
        assert!(headers.get(X_TROUSSEAU_ACCESS_TOKEN).is_none());
    }
}
