//! Who may go where: public routes, per-route rules and the organization requirement, compiled
//! once at start and evaluated without allocation on the request path.
//!
//! Paths are matched in a normalized form (dot segments resolved, repeated slashes collapsed,
//! unreserved percent-escapes decoded) so `/admin/../x`, `//admin` or `/%61dmin` cannot slip past a
//! rule. A public route only matches when the raw path already is in that form: an ambiguous path
//! is never let through without a session.
//!
//! App servers read paths in more ways than RFC 3986 does, and a rule must hold under every reading
//! the app behind us might apply, so rules judge the strictest of them:
//! - `%2F` decoded to `/` (WSGI, PHP, Python's `http.server`) and `\` read as `/` (IIS and other
//!   Windows-hosted servers): `/admin%2Fusers` and `/admin\users` meet the `/admin/*` rule;
//! - path parameters dropped from each segment before dot segments are resolved (servlet
//!   containers: Jetty routes `/admin;x/x` to `/admin/x`, Tomcat reads `/public/..;/admin` as
//!   `/admin`);
//! - case folded (Express by default, ASP.NET, IIS): `/ADMIN/x` and `/%41dmin/x` meet `/admin/*`.
//!
//! A path that any of these readings could change — anything not already in normalized form, or
//! holding `\`, `%2F`, `%5C`, `;` or `%3B` — is never public. Methods are compared without regard
//! to case (`delete` is `DELETE`), and a rule for `GET` also covers `HEAD`.

use std::borrow::Cow;

mod narrowing;

use crate::config::{OrganizationConfig, RoutesConfig};
use crate::identity::Organization;
use crate::session::Session;

/// A compiled path pattern. `*` at the end matches the rest of the path (any depth); `*` anywhere
/// else matches within one segment.
#[derive(Clone, Debug)]
pub struct PathPattern {
    parts: Vec<Part>,
    text: String,
    /// A pattern ending in `/*` also matches the path without that ending (`/admin/*` matches
    /// `/admin`): set for rules, so a rule about a folder covers its index too.
    covers_bare_prefix: bool,
}

#[derive(Clone, Debug)]
enum Part {
    Literal(String),
    /// Any characters except `/`.
    Segment,
    /// Anything, to the end.
    Rest,
}

impl PathPattern {
    /// Compiles a pattern such as `/assets/*` or `/api/*/status`.
    pub fn new(pattern: &str) -> PathPattern {
        let mut parts = Vec::new();
        let pieces: Vec<&str> = pattern.split('*').collect();
        for (i, piece) in pieces.iter().enumerate() {
            if !piece.is_empty() {
                parts.push(Part::Literal((*piece).to_string()));
            }
            if i + 1 < pieces.len() {
                parts.push(if i + 2 == pieces.len() && pieces[i + 1].is_empty() { Part::Rest } else { Part::Segment });
            }
        }
        PathPattern { parts, text: pattern.to_string(), covers_bare_prefix: false }
    }

    /// Compiles a rule's pattern: like [`PathPattern::new`], and a trailing `/*` also matches the
    /// bare prefix (`/admin/*` covers `/admin`, the folder's index, as well as `/admin/x`).
    pub fn for_rule(pattern: &str) -> PathPattern {
        PathPattern { covers_bare_prefix: pattern.ends_with("/*"), ..PathPattern::new(pattern) }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path` (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        fn go(parts: &[Part], path: &str, bare: bool) -> bool {
            match parts.split_first() {
                None => path.is_empty(),
                // `/admin/*` against `/admin`: the literal's final `/` is all that is missing.
                Some((Part::Literal(lit), [Part::Rest])) if bare && lit.ends_with('/') && path == &lit[..lit.len() - 1] => true,
                Some((Part::Literal(lit), rest)) => path.strip_prefix(lit.as_str()).is_some_and(|p| go(rest, p, bare)),
                Some((Part::Rest, _)) => true,
                Some((Part::Segment, rest)) => {
                    let end = path.find('/').unwrap_or(path.len());
                    // Only at character boundaries: a path may hold any UTF-8.
                    (0..=end).rev().filter(|&i| path.is_char_boundary(i)).any(|i| go(rest, &path[i..], bare))
                }
            }
        }
        go(&self.parts, path, self.covers_bare_prefix)
    }
}

/// Normalizes a request path for matching: decodes percent-escapes of unreserved characters,
/// collapses repeated slashes and resolves `.` and `..`. Borrowed when nothing changes.
/// Idempotent: a `%` that starts no escape becomes `%25`, so decoding never forms a new escape
/// (`%%32%65` is `%252e`, not `%2e`, which a second pass would turn into `.`).
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let needs_work = path.contains("//")
        || path.contains("/.")
        || path.contains('%')
        || !path.starts_with('/');
    if !needs_work {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if result.is_empty() || (decoded.ends_with('/') && !result.ends_with('/')) {
        result.push('/');
    }
    Cow::Owned(result)
}

fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = &bytes[i + 1..i + 3];
            if let Some(v) = std::str::from_utf8(hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(v);
                } else {
                    // Keep other escapes, upper-cased so `%2f` and `%2F` compare alike.
                    out.push(b'%');
                    out.extend(hex.iter().map(u8::to_ascii_uppercase));
                }
                i += 3;
                continue;
            }
        }
        if bytes[i] == b'%' {
            // A `%` that starts no escape stands for itself.
            out.extend_from_slice(b"%25");
        } else {
            out.push(bytes[i]);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether some apps would read a separator this path does not show: a backslash, or an encoded
/// slash or backslash.
fn has_hidden_separator(path: &str) -> bool {
    path.contains('\\') || has_encoded_separator(path)
}

/// Whether the path holds `%2F` or `%5C` (either case).
fn has_encoded_separator(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| {
        w[0] == b'%' && (w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f') || w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c'))
    })
}

/// Whether a segment of this path carries parameters (`;…`, or `%3B…` for servers that decode
/// before they split).
fn has_path_parameter(path: &str) -> bool {
    path.contains(';') || path.as_bytes().windows(3).any(|w| w[0] == b'%' && w[1] == b'3' && w[2].eq_ignore_ascii_case(&b'b'))
}

/// Whether an app server could read `path` as another path than the one it shows: anything not in
/// normalized form, or holding a hidden separator or a path parameter. Such a path is never public.
pub fn is_ambiguous(path: &str) -> bool {
    normalize_path(path) != path || has_hidden_separator(path) || has_path_parameter(path)
}

/// `\`, `%2F` and `%5C` replaced by `/`, nothing else changed.
fn separators_replaced(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(c) = rest.chars().next() {
        let escape = rest.get(..3).filter(|e| e.eq_ignore_ascii_case("%2f") || e.eq_ignore_ascii_case("%5c"));
        if let Some(e) = escape {
            out.push('/');
            rest = &rest[e.len()..];
        } else {
            out.push(if c == '\\' { '/' } else { c });
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Whether some reading of `path` climbs above the root: a `..` segment with nothing left to
/// remove, once unreserved escapes are decoded (`%2e%2e`), hidden separators read as `/` (`..%2F`,
/// `..\`) and path parameters dropped (`..;`). The normalized forms cannot tell (they stop at the
/// root), but an app mounted under a path prefix would be left by such a path.
pub fn climbs_above_root(path: &str) -> bool {
    let mut depth = 0usize;
    for segment in separators_replaced(&decode_unreserved(path)).split('/') {
        match without_parameter(segment) {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

/// A path segment without its parameters: up to the first `;` or `%3B`.
fn without_parameter(segment: &str) -> &str {
    let end = segment
        .char_indices()
        .find(|&(j, c)| c == ';' || (c == '%' && segment.get(j..j + 3).is_some_and(|e| e.eq_ignore_ascii_case("%3b"))))
        .map_or(segment.len(), |(j, _)| j);
    &segment[..end]
}

/// Each segment's path parameters (from a `;` to the end of the segment) dropped, nothing else
/// changed: servlet containers do this *before* they decode and resolve dot segments, so
/// `/public/..;/admin/x` is `/admin/x`, `/admin;x/x` is `/admin/x` — and `%3B` is no parameter to
/// them (`/admin;/%3b./..` is `/admin/;./..`, which is `/admin`).
fn parameters_cut(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(segment.split(';').next().unwrap_or_default());
    }
    out
}

/// One escape (`%2F`, `%5C` or `%3B`, either case) decoded to its character, nothing else changed.
fn escape_decoded(path: &str, escape: &str, to: char) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(c) = rest.chars().next() {
        if rest.get(..3).is_some_and(|e| e.eq_ignore_ascii_case(escape)) {
            out.push(to);
            rest = &rest[3..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The escapes some app server decodes before it routes, and what each becomes.
const ROUTING_ESCAPES: [(&str, char); 3] = [("%2f", '/'), ("%5c", '\\'), ("%3b", ';')];

/// The readings of `path` an app server might route by besides its normalized form (module doc),
/// normalized: every order of five steps, each taken or not — parameters cut at `;`; `%2F`, `%5C`
/// and `%3B` each decoded; `\` read as `/`. Servers differ in which they take and in what order: a
/// servlet container cuts parameters, then decodes (`%2F` is `/`, `%3B` a plain `;`, `\` a plain
/// character); Spring decodes first (`/%41dmin;..;%2FF//..` is `/Admin` to it, `/` to Tomcat); IIS
/// also reads `\` as `/`. Empty for most paths, which hold none of `;`, `%3B`, `%2F`, `%5C`, `\`.
fn other_readings(path: &str, normalized: &str) -> Vec<String> {
    // No step brings back what another removed except `%3B` → `;` (which the cut then removes),
    // so the forms are few; the cap bounds the work on a path crafted to hold everything.
    fn derive(form: &str, forms: &mut Vec<String>) {
        let cut = form.contains(';').then(|| parameters_cut(form));
        let decoded = ROUTING_ESCAPES.iter().map(|&(escape, to)| {
            form.as_bytes().windows(3).any(|w| w.eq_ignore_ascii_case(escape.as_bytes())).then(|| escape_decoded(form, escape, to))
        });
        let backslashes = form.contains('\\').then(|| form.replace('\\', "/"));
        for derived in std::iter::once(cut).chain(decoded).chain(std::iter::once(backslashes)).flatten() {
            if !forms.contains(&derived) {
                forms.push(derived);
            }
        }
    }
    let mut forms: Vec<String> = Vec::new();
    derive(path, &mut forms);
    let mut next = 0;
    while next < forms.len() && forms.len() < 64 {
        let form = forms[next].clone();
        derive(&form, &mut forms);
        next += 1;
    }
    let mut readings: Vec<String> = Vec::with_capacity(forms.len());
    for form in forms {
        let reading = normalize_path(&form).into_owned();
        if reading != normalized && !readings.contains(&reading) {
            readings.push(reading);
        }
    }
    readings
}

/// One compiled route rule.
#[derive(Clone, Debug)]
pub struct Rule {
    path: PathPattern,
    /// The pattern with ASCII letters lower-cased, for the case-folded reading of a path.
    folded_path: PathPattern,
    /// Upper-cased method names; empty = every method.
    methods: Vec<String>,
    roles: Vec<String>,
    organizations: Vec<String>,
    emails: Vec<String>,
    email_domains: Vec<String>,
    /// `routes.rules[].cors_preflight`: `Some(true)` for `pass`.
    cors_preflight: Option<bool>,
}

/// Why a request was denied; pages and JSON answers turn it into words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The user belongs to no organization this app accepts.
    NoOrganization,
    /// The selected organization is not one this app or route accepts.
    OrganizationNotAllowed,
    /// The user's role in the selected organization is not allowed.
    RoleNotAllowed {
        /// The user's role (empty when no organization is selected).
        role: String,
        /// Roles that would be allowed.
        allowed: Vec<String>,
    },
    /// The user's email (or its domain) is not on the route's list.
    EmailNotAllowed,
}

impl Denial {
    /// A stable machine-readable code for JSON answers and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Denial::NoOrganization => "no_organization",
            Denial::OrganizationNotAllowed => "organization_not_allowed",
            Denial::RoleNotAllowed { .. } => "role_not_allowed",
            Denial::EmailNotAllowed => "email_not_allowed",
        }
    }
}

/// The outcome of authorizing a signed-in request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let it through.
    Allow,
    /// The user has several acceptable organizations and has not chosen one yet.
    ChooseOrganization,
    /// Refuse, with the reason.
    Deny(Denial),
}

/// The compiled access policy.
#[derive(Clone, Debug)]
pub struct Policy {
    public: Vec<PathPattern>,
    rules: Vec<Rule>,
    /// Some rule's pattern has an upper-case ASCII letter, so every path needs its case-folded
    /// reading judged (not only paths with upper-case letters).
    rules_have_upper_case: bool,
    organization: OrganizationConfig,
}

impl Policy {
    /// Compiles `routes:` and `organization:`.
    pub fn new(routes: &RoutesConfig, organization: &OrganizationConfig) -> Policy {
        let public = routes.public.iter().map(|p| PathPattern::new(p)).collect();
        let rules = routes
            .rules
            .iter()
            .map(|r| Rule {
                path: PathPattern::for_rule(&r.path),
                folded_path: PathPattern::for_rule(&r.path.to_ascii_lowercase()),
                methods: r.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                roles: r.roles.clone(),
                organizations: r.organizations.clone(),
                emails: r.emails.iter().map(|e| e.to_ascii_lowercase()).collect(),
                email_domains: r
                    .email_domains
                    .iter()
                    .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
                    .collect(),
                cors_preflight: r.cors_preflight.map(|p| p == crate::config::Preflight::Pass),
            })
            .collect();
        let rules_have_upper_case = routes.rules.iter().any(|r| r.path.bytes().any(|b| b.is_ascii_uppercase()));
        Policy { public, rules, rules_have_upper_case, organization: organization.clone() }
    }

    /// Whether a genuine CORS preflight to `path` goes to the app without a session: the rule that
    /// would judge an `OPTIONS` there says `cors_preflight: pass`, or says nothing and `global`
    /// (`cors.preflight: pass`) does — for every reading of the path an app server might apply
    /// (as for the rules), and never for an ambiguous path.
    pub fn preflight_passes(&self, path: &str, global: bool) -> bool {
        if is_ambiguous(path) {
            return false;
        }
        let options = http::Method::OPTIONS;
        let verdict = |reading: &str, folded: bool| {
            let rule = self.rules.iter().find(|r| {
                r.covers_method(&options) && if folded { r.folded_path.matches(reading) } else { r.path.matches(reading) }
            });
            rule.and_then(|r| r.cors_preflight).unwrap_or(global)
        };
        let normalized = normalize_path(path);
        let mut readings = vec![normalized.to_string()];
        readings.extend(other_readings(path, &normalized));
        readings.iter().all(|r| verdict(r, false) && verdict(&r.to_ascii_lowercase(), true))
    }

    /// Whether the path is proxied without a session. Only an unambiguous path (see
    /// [`is_ambiguous`]) can be public; public patterns match exactly, case included.
    pub fn is_public(&self, path: &str) -> bool {
        if self.public.is_empty() || is_ambiguous(path) {
            return false;
        }
        self.public.iter().any(|p| p.matches(path))
    }

    /// The organizations of this user that the app accepts (`organization.allowed`).
    pub fn acceptable_organizations<'s>(&self, session: &'s Session) -> impl Iterator<Item = &'s Organization> + use<'s, '_> {
        session
            .identity
            .organizations
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .filter(move |o| org_listed(&self.organization.allowed, o))
    }

    /// The organization to select automatically right after sign-in: the only acceptable one.
    pub fn auto_select(&self, session: &Session) -> Option<String> {
        let mut acceptable = self.acceptable_organizations(session);
        let first = acceptable.next()?;
        acceptable.next().is_none().then(|| first.id.clone())
    }

    /// Whether an organization requirement applies at all (so the selector makes sense).
    pub fn organizations_matter(&self) -> bool {
        self.organization.required || !self.organization.allowed.is_empty() || !self.organization.roles.is_empty()
            || self.rules.iter().any(|r| !r.roles.is_empty() || !r.organizations.is_empty())
    }

    /// Decides whether this signed-in user may make this request.
    pub fn authorize(&self, session: &Session, method: &http::Method, path: &str) -> Decision {
        if let Some(decision) = self.judge_organization(session) {
            return decision;
        }
        self.judge_rules(session, method, path).map_or(Decision::Allow, |(decision, _)| decision)
    }

    /// What refused a request [`Policy::authorize`] refused, for the audit line:
    /// `organization` (the `organization:` section) or `routes.rules[i] (<path>)`.
    pub fn refusing_rule(&self, session: &Session, method: &http::Method, path: &str) -> String {
        if self.judge_organization(session).is_some() {
            return "organization".into();
        }
        match self.judge_rules(session, method, path) {
            Some((_, Some(i))) => format!("routes.rules[{i}] ({})", self.rules[i].path.text),
            _ => "organization".into(),
        }
    }

    /// The `organization:` section's decision, when it decides (refuses, or asks for a choice).
    fn judge_organization(&self, session: &Session) -> Option<Decision> {
        let org_cfg = &self.organization;
        let needs_org = org_cfg.required || !org_cfg.roles.is_empty();
        if let Some(o) = session.selected_organization() {
            if !org_listed(&org_cfg.allowed, o) {
                return Some(Decision::Deny(Denial::OrganizationNotAllowed));
            }
            if !org_cfg.roles.is_empty() && !org_cfg.roles.iter().any(|r| r == &o.role) {
                return Some(Decision::Deny(Denial::RoleNotAllowed { role: o.role.clone(), allowed: org_cfg.roles.clone() }));
            }
        } else if needs_org {
            return Some(match self.acceptable_organizations(session).count() {
                0 => Decision::Deny(Denial::NoOrganization),
                _ => Decision::ChooseOrganization,
            });
        }
        None
    }

    /// The rules' decision when it is not to allow, with the index of the rule that decided.
    fn judge_rules(&self, session: &Session, method: &http::Method, path: &str) -> Option<(Decision, Option<usize>)> {
        if self.rules.is_empty() {
            return None;
        }
        let org = session.selected_organization();
        // The strictest of the readings an app server might apply (module doc): the first that is
        // not allowed decides.
        let normalized = normalize_path(path);
        let decision = self.judge_reading(session, org, method, &normalized);
        if decision.0 != Decision::Allow {
            return Some(decision);
        }
        for reading in other_readings(path, &normalized) {
            let decision = self.judge_reading(session, org, method, &reading);
            if decision.0 != Decision::Allow {
                return Some(decision);
            }
        }
        None
    }

    /// The rules' decision for one reading of the path, and for its case-folded form when case
    /// could make a difference.
    fn judge_reading(&self, session: &Session, org: Option<&Organization>, method: &http::Method, reading: &str) -> (Decision, Option<usize>) {
        let decision = self.apply_rules(session, org, method, reading, false);
        if decision.0 != Decision::Allow || !(self.rules_have_upper_case || reading.bytes().any(|b| b.is_ascii_uppercase())) {
            return decision;
        }
        self.apply_rules(session, org, method, &reading.to_ascii_lowercase(), true)
    }

    /// The first rule matching this reading of the path decides (no rule: allowed), with its
    /// index. `folded`: the reading is lower-cased and is matched against the lower-cased patterns.
    fn apply_rules(&self, session: &Session, org: Option<&Organization>, method: &http::Method, reading: &str, folded: bool) -> (Decision, Option<usize>) {
        let Some(index) = self.rules.iter().position(|r| {
            r.covers_method(method) && if folded { r.folded_path.matches(reading) } else { r.path.matches(reading) }
        }) else {
            return (Decision::Allow, None);
        };
        (self.apply_rule(&self.rules[index], session, org), Some(index))
    }

    /// One rule's decision for this user.
    fn apply_rule(&self, rule: &Rule, session: &Session, org: Option<&Organization>) -> Decision {
        if !rule.organizations.is_empty() || !rule.roles.is_empty() {
            let membership = self.judge_membership(session, org, &rule.organizations, &rule.roles);
            if membership != Decision::Allow {
                return membership;
            }
        }
        if !rule.emails.is_empty() || !rule.email_domains.is_empty() {
            // Only a verified, plain `local@domain` address counts: `a@evil.com@corp.com` is not
            // at corp.com (oauth2-proxy CVE-2026-40574), nor is `a@corp.com.`.
            let verified = session.identity.email_verified == Some(true);
            let email = session.identity.email.as_deref().unwrap_or("");
            let ok = verified
                && plain_email_domain(email).is_some_and(|domain| {
                    rule.emails.iter().any(|e| e.eq_ignore_ascii_case(email))
                        || rule.email_domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
                });
            if !ok {
                return Decision::Deny(Denial::EmailNotAllowed);
            }
        }
        Decision::Allow
    }
}

impl Policy {
    /// Whether the selected organization `org` is one of `organizations` (ids or slugs) and its
    /// role one of `roles` (an empty list: any). Without a selected organization: choose one first
    /// when the user has an acceptable one, else refused — what a rule naming organizations or roles
    /// and a gateway's [`crate::forward_auth::Narrowing`] both ask.
    fn judge_membership(&self, session: &Session, org: Option<&Organization>, organizations: &[String], roles: &[String]) -> Decision {
        let Some(o) = org else {
            return match self.acceptable_organizations(session).count() {
                0 => Decision::Deny(Denial::NoOrganization),
                _ => Decision::ChooseOrganization,
            };
        };
        if !org_listed(organizations, o) {
            return Decision::Deny(Denial::OrganizationNotAllowed);
        }
        if !roles.is_empty() && !roles.iter().any(|r| r == &o.role) {
            return Decision::Deny(Denial::RoleNotAllowed { role: o.role.clone(), allowed: roles.to_vec() });
        }
        Decision::Allow
    }
}

/// The domain of a plain `local@domain` address: exactly one `@`, both sides non-empty, no
/// trailing dot. `None` for anything else, which no email rule accepts. Domains compare as ASCII
/// without regard to case, so a look-alike (`cоrp.com` with a Cyrillic `о`) never matches.
fn plain_email_domain(email: &str) -> Option<&str> {
    let (local, domain) = email.split_once('@')?;
    let plain = !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !domain.ends_with('.');
    plain.then_some(domain)
}

impl Rule {
    /// Whether the rule applies to this method: names compare without regard to case (`delete` is
    /// `DELETE`: some servers route it so), and `GET` covers `HEAD`, which servers answer with the
    /// `GET` handler.
    fn covers_method(&self, method: &http::Method) -> bool {
        let method = method.as_str();
        self.methods.is_empty()
            || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method) || (m == "GET" && method.eq_ignore_ascii_case("HEAD")))
    }
}

/// Whether an organization is on a list of ids or slugs (an empty list accepts all).
fn org_listed(list: &[String], org: &Organization) -> bool {
    list.is_empty() || list.iter().any(|x| *x == org.id || *x == org.slug)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleConfig;
    use crate::identity::Identity;

    fn org(id: &str, slug: &str, role: &str) -> Organization {
        Organization { id: id.into(), name: slug.into(), slug: slug.into(), role: role.into() }
    }

    fn session(orgs: Vec<Organization>, selected: Option<&str>) -> Session {
        Session {
            identity: Identity {
                sub: "u".into(),
                email: Some("jean@hotel.com".into()),
                email_verified: Some(true),
                organizations: Some(orgs),
                ..Default::default()
            },
            org: selected.map(String::from),
            ..crate::session::sample("s", "s")
        }
    }

    #[test]
    fn globs_match_as_documented() {
        let p = PathPattern::new("/assets/*");
        assert!(p.matches("/assets/a.css") && p.matches("/assets/x/y.js") && p.matches("/assets/"));
        assert!(!p.matches("/assets") && !p.matches("/assetsx/a"));
        let p = PathPattern::new("/api/*/status");
        assert!(p.matches("/api/v1/status") && !p.matches("/api/v1/x/status"));
        let p = PathPattern::new("/healthz");
        assert!(p.matches("/healthz") && !p.matches("/healthz/x"));
    }

    #[test]
    fn normalization_defeats_bypasses() {
        assert_eq!(normalize_path("/admin/../x"), "/x");
        assert_eq!(normalize_path("//admin//a"), "/admin/a");
        assert_eq!(normalize_path("/%61dmin/"), "/admin/");
        assert_eq!(normalize_path("/a/./b"), "/a/b");
        assert_eq!(normalize_path("/a%2fb"), "/a%2Fb");
        assert!(matches!(normalize_path("/plain/path"), Cow::Borrowed(_)));
        // A `%` that starts no escape cannot combine with a decoded character into a new one.
        assert_eq!(normalize_path("/%%32%65%%32%65/admin"), "/%252e%252e/admin");
        assert_eq!(normalize_path("/100%"), "/100%25");
        for p in ["/%%32%65%%32%65/admin", "/%2%61", "/a%", "/%%%"] {
            let once = normalize_path(p).into_owned();
            assert_eq!(normalize_path(&once), once, "{p}");
        }
    }

    #[test]
    fn inner_stars_match_non_ascii_segments_without_panicking() {
        let p = PathPattern::new("/api/*/status");
        assert!(p.matches("/api/\u{e9}/status") && p.matches("/api/\u{1F600}x/status"));
        assert!(!p.matches("/api/\u{e9}/nope") && !p.matches("/api/\u{e9}"));
        assert!(PathPattern::new("/*.css").matches("/\u{e9}t\u{e9}.css"));
    }

    #[test]
    fn public_routes_need_a_clean_path() {
        let routes = RoutesConfig { public: vec!["/assets/*".into(), "/healthz".into()], rules: vec![] };
        let p = Policy::new(&routes, &OrganizationConfig::default());
        assert!(p.is_public("/assets/app.js"));
        assert!(p.is_public("/healthz"));
        assert!(!p.is_public("/assets/../admin"));
        assert!(!p.is_public("/assets/%2e%2e/admin"));
        assert!(!p.is_public("/admin"));
    }

    #[test]
    fn first_matching_rule_decides_roles() {
        let routes = RoutesConfig {
            public: vec![],
            rules: vec![
                RuleConfig { path: "/admin/*".into(), roles: vec!["admin".into()], ..Default::default() },
                RuleConfig { path: "/*".into(), methods: vec!["POST".into()], email_domains: vec!["hotel.com".into()], ..Default::default() },
            ],
        };
        let p = Policy::new(&routes, &OrganizationConfig::default());
        let admin = session(vec![org("1", "a", "admin")], Some("1"));
        let member = session(vec![org("1", "a", "member")], Some("1"));
        assert_eq!(p.authorize(&admin, &http::Method::GET, "/admin/x"), Decision::Allow);
        assert!(matches!(p.authorize(&member, &http::Method::GET, "/admin/x"), Decision::Deny(Denial::RoleNotAllowed { .. })));
        assert!(matches!(p.authorize(&member, &http::Method::GET, "/%61dmin/x"), Decision::Deny(_)));
        assert_eq!(p.authorize(&member, &http::Method::GET, "/other"), Decision::Allow);
        assert_eq!(p.authorize(&member, &http::Method::POST, "/other"), Decision::Allow);
        let mut outsider = member.clone();
        outsider.identity.email = Some("x@evil.com".into());
        assert_eq!(p.authorize(&outsider, &http::Method::POST, "/other"), Decision::Deny(Denial::EmailNotAllowed));
    }

    fn admin_rule_policy(public: &[&str]) -> Policy {
        let routes = RoutesConfig {
            public: public.iter().map(|p| p.to_string()).collect(),
            rules: vec![
                RuleConfig { path: "/admin/*".into(), roles: vec!["admin".into()], ..Default::default() },
                RuleConfig { path: "/reports/*".into(), methods: vec!["DELETE".into(), "GET".into()], roles: vec!["admin".into()], ..Default::default() },
            ],
        };
        Policy::new(&routes, &OrganizationConfig::default())
    }

    #[test]
    fn path_parameters_are_judged_as_servlet_containers_read_them() {
        let p = admin_rule_policy(&["/public/*"]);
        let member = session(vec![org("1", "a", "member")], Some("1"));
        for path in ["/admin;x/x", "/admin;jsessionid=1/x", "/public/..;/admin/x", "/public/..;x=1/admin/", "/admin%3bx/x", "/x/..;/admin"] {
            assert!(matches!(p.authorize(&member, &http::Method::GET, path), Decision::Deny(_)), "{path}");
            assert!(!p.is_public(path), "{path} must not be public");
        }
        assert!(p.is_public("/public/app.js"));
        assert!(!p.is_public("/public/app.js;v=2"));
        assert_eq!(p.authorize(&member, &http::Method::GET, "/other;x/y"), Decision::Allow);
    }

    #[test]
    fn a_folder_rule_covers_the_folder_index() {
        let p = admin_rule_policy(&[]);
        let member = session(vec![org("1", "a", "member")], Some("1"));
        for path in ["/admin", "/admin/", "/admin/x", "//admin", "/admin/."] {
            assert!(matches!(p.authorize(&member, &http::Method::GET, path), Decision::Deny(_)), "{path}");
        }
        assert_eq!(p.authorize(&member, &http::Method::GET, "/administration"), Decision::Allow);
        // Public routes keep their exact meaning: `/assets/*` is not `/assets`.
        let p = admin_rule_policy(&["/assets/*"]);
        assert!(p.is_public("/assets/a.css") && !p.is_public("/assets"));
    }

    #[test]
    fn rules_judge_the_case_folded_path_too() {
        let p = admin_rule_policy(&[]);
        let member = session(vec![org("1", "a", "member")], Some("1"));
        // The last two: only the readings in both orders show `/Admin` (Spring decodes `%2F`, then
        // drops parameters) — found by the path_rules fuzz target.
        for path in ["/ADMIN/x", "/Admin/x", "/%41dmin/x", "/aDmIn", "/ADMIN;x/y", "/Admin%2Fx", "/%41dmin;%25..;%2FF//..;1", "/admin;..;%2Fx//..;", "//picA\\ai-.;/..//admin%2f=", "/admin;/%3b./.."] {
            assert!(matches!(p.authorize(&member, &http::Method::GET, path), Decision::Deny(_)), "{path}");
        }
        // A rule written with capitals covers every spelling as well.
        let routes = RoutesConfig { public: vec![], rules: vec![RuleConfig { path: "/Admin/*".into(), roles: vec!["admin".into()], ..Default::default() }] };
        let capital = Policy::new(&routes, &OrganizationConfig::default());
        for path in ["/admin/x", "/ADMIN/x", "/Admin"] {
            assert!(matches!(capital.authorize(&member, &http::Method::GET, path), Decision::Deny(_)), "{path}");
        }
    }

    #[test]
    fn methods_compare_without_case_and_get_covers_head() {
        let p = admin_rule_policy(&[]);
        let member = session(vec![org("1", "a", "member")], Some("1"));
        for method in ["DELETE", "delete", "Delete", "GET", "get", "HEAD", "head"] {
            let m = http::Method::from_bytes(method.as_bytes()).unwrap();
            assert!(matches!(p.authorize(&member, &m, "/reports/1"), Decision::Deny(_)), "{method}");
        }
        assert_eq!(p.authorize(&member, &http::Method::POST, "/reports/1"), Decision::Allow);
        assert_eq!(p.authorize(&member, &http::Method::from_bytes(b"post").unwrap(), "/reports/1"), Decision::Allow);
    }

    #[test]
    fn paths_climbing_above_the_root_are_recognized_in_every_spelling() {
        for path in ["/../x", "/a/../../x", "/%2e%2e/x", "/%2E./x", "/..;/x", "/..%3Bx/x", "/..%2Fx", "/..\\x", "/a/%2e%2e%5c..%5cx", "/./../x"] {
            assert!(climbs_above_root(path), "{path}");
        }
        for path in ["/", "/a/../x", "/a/b/../../x", "/..a/x", "/a..b", "/%2e%2ex/y", "/a;b/../c"] {
            assert!(!climbs_above_root(path), "{path}");
        }
    }

    #[test]
    fn email_rules_accept_only_verified_plain_addresses() {
        let routes = RoutesConfig {
            public: vec![],
            rules: vec![RuleConfig { path: "/corp/*".into(), email_domains: vec!["corp.com".into()], emails: vec!["boss@partner.com".into()], ..Default::default() }],
        };
        let p = Policy::new(&routes, &OrganizationConfig::default());
        let with = |email: &str, verified: Option<bool>| {
            let mut s = session(vec![], None);
            s.identity.email = Some(email.into());
            s.identity.email_verified = verified;
            p.authorize(&s, &http::Method::GET, "/corp/x")
        };
        assert_eq!(with("ann@corp.com", Some(true)), Decision::Allow);
        assert_eq!(with("Ann@CORP.com", Some(true)), Decision::Allow);
        assert_eq!(with("BOSS@partner.com", Some(true)), Decision::Allow);
        for (email, verified) in [
            ("a@evil.com@corp.com", Some(true)),
            ("a@corp.com.", Some(true)),
            ("a@c\u{043e}rp.com", Some(true)),
            ("@corp.com", Some(true)),
            ("corp.com", Some(true)),
            ("a@corp.com", Some(false)),
            ("a@corp.com", None),
            ("boss@partner.com", Some(false)),
            ("", Some(true)),
        ] {
            assert_eq!(with(email, verified), Decision::Deny(Denial::EmailNotAllowed), "{email} {verified:?}");
        }
    }

    #[test]
    fn organization_requirement() {
        let cfg = OrganizationConfig { required: true, allowed: vec!["b".into()], roles: vec![] };
        let p = Policy::new(&RoutesConfig::default(), &cfg);
        let none = session(vec![], None);
        assert_eq!(p.authorize(&none, &http::Method::GET, "/"), Decision::Deny(Denial::NoOrganization));
        let two = session(vec![org("1", "a", "admin"), org("2", "b", "member")], None);
        assert_eq!(p.auto_select(&two), Some("2".into()));
        let wrong = session(vec![org("1", "a", "admin"), org("2", "b", "member")], Some("1"));
        assert_eq!(p.authorize(&wrong, &http::Method::GET, "/"), Decision::Deny(Denial::OrganizationNotAllowed));
        let open = Policy::new(&RoutesConfig::default(), &OrganizationConfig { required: true, ..Default::default() });
        assert_eq!(open.authorize(&two, &http::Method::GET, "/"), Decision::ChooseOrganization);
    }
}
