//! Target for Trousseau's `organizations` claim (tier 3): how it is read from an ID token and from
//! userinfo, and everything the proxy does with it (organization policy, selector page, headers).

use std::sync::OnceLock;

use super::fixtures::{self, oidc, CLIENT_ID, ISSUER, NONCE, SUB};
use crate::config::{OrganizationConfig, RoutesConfig};
use crate::identity::{Identity, Organization};
use crate::util::clock::now_secs;
use crate::pages::Lang;
use crate::policy::{Decision, Policy};
use crate::session::Session;

/// The input is the raw JSON value of `organizations`, spliced into a validly signed ID token and
/// into a userinfo answer. Properties, for every identity that comes out and several policies:
/// an automatic selection is the only acceptable organization; an allowed request with an
/// organization requirement has a selected membership that is listed and has an allowed role; a
/// rule's role is only granted to a member with that role; the selector page escapes every field;
/// the identity headers are well-formed.
pub fn organizations_claim(data: &[u8]) {
    let now = now_secs();
    let mut payload = format!(
        r#"{{"iss":"{ISSUER}","aud":"{CLIENT_ID}","sub":"{SUB}","nonce":"{NONCE}","iat":{now},"exp":{},"email":"jean.dupont@hotel.example","name":"Jean Dupont","organizations":"#,
        now + 300
    )
    .into_bytes();
    payload.extend_from_slice(data);
    payload.push(b'}');
    let token = fixtures::sign_jws(&fixtures::default_header("JWT"), &payload);
    let body = fixtures::token_response(&token);
    if let Ok(tokens) = fixtures::now_or_never(oidc().validate_token_response(&body, Some(NONCE), None)) {
        check_identity(tokens.identity, now);
    }

    let mut userinfo = br#"{"sub":"fuzz-sub","organizations":"#.to_vec();
    userinfo.extend_from_slice(data);
    userinfo.push(b'}');
    if let Ok(identity) = serde_json::from_slice::<Identity>(&userinfo) {
        check_identity(identity, now);
    }
}

/// The policies every identity is judged by.
fn policies() -> &'static [(Policy, OrganizationConfig)] {
    static POLICIES: OnceLock<Vec<(Policy, OrganizationConfig)>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let routes: RoutesConfig = serde_yaml::from_str(
            "rules:\n  - path: /admin/*\n    roles: [admin]\n  - path: /hr/*\n    organizations: [hotel-riviera-nice]\n",
        )
        .expect("fixture routes");
        [
            "{}",
            "required: true",
            "required: true\nallowed: [hotel-le-grand-paris, 018dd362-a511-89dd-9f1d-111ff551ff51]\nroles: [admin, hr]",
            "roles: [member]",
        ]
        .iter()
        .map(|yaml| {
            let organization: OrganizationConfig = serde_yaml::from_str(yaml).expect("fixture organization policy");
            (Policy::new(&routes, &organization), organization)
        })
        .collect()
    })
}

fn listed(list: &[String], org: &Organization) -> bool {
    list.is_empty() || list.iter().any(|x| *x == org.id || *x == org.slug)
}

fn check_identity(identity: Identity, now: u64) {
    let organizations = identity.organizations.clone().unwrap_or_default();
    let mut session = Session { identity, org: None, ..fixtures::session(now, 0) };
    let get = http::Method::GET;

    for (policy, config) in policies() {
        let acceptable: Vec<Organization> = policy.acceptable_organizations(&session).cloned().collect();
        assert!(acceptable.iter().all(|o| listed(&config.allowed, o)), "an organization that is not allowed is offered");
        if let Some(id) = policy.auto_select(&session) {
            assert_eq!(acceptable.len(), 1, "selected automatically among several");
            assert_eq!(acceptable[0].id, id);
        }

        let mut choices: Vec<Option<String>> = vec![None, policy.auto_select(&session), Some("not-a-member".into())];
        choices.extend(organizations.iter().take(4).map(|o| Some(o.id.clone())));
        for choice in choices {
            session.org = choice;
            let selected = session.selected_organization().cloned();
            for path in ["/", "/admin/settings", "/hr/payroll"] {
                if policy.authorize(&session, &get, path) != Decision::Allow {
                    continue;
                }
                match &selected {
                    Some(o) => {
                        assert!(listed(&config.allowed, o), "{path}: allowed with an organization that is not allowed");
                        assert!(config.roles.is_empty() || config.roles.contains(&o.role), "{path}: allowed with role {}", o.role);
                    }
                    None => assert!(!config.required && config.roles.is_empty(), "{path}: allowed without an organization"),
                }
                if path == "/admin/settings" {
                    assert_eq!(selected.as_ref().map(|o| o.role.as_str()), Some("admin"), "{path}: allowed without the admin role");
                }
                if path == "/hr/payroll" {
                    let o = selected.as_ref().expect("the /hr/ rule needs an organization");
                    assert!(listed(&["hotel-riviera-nice".to_string()], o), "/hr/: another organization");
                }
            }
        }

        session.org = policy.auto_select(&session);
        let choices: Vec<&Organization> = acceptable.iter().collect();
        let page = crate::pages::organization_selector(Lang::Fr, &session, &choices, "/reports?a=1&b=2");
        // The same page with every markup character of the claim's text swapped for a harmless
        // look-alike: if escaping holds, the page's markup characters do not depend on the claim.
        // (`'` is not among them: the templates quote every attribute with `"`, so a `'` in text
        // or in an attribute value cannot end anything, and maud leaves it as it is.)
        let markup = ['<', '>', '"'];
        let texts = acceptable.iter().flat_map(|o| [&o.id, &o.name, &o.slug, &o.role]);
        let who = [session.identity.name.as_deref(), session.identity.email.as_deref(), Some(session.identity.sub.as_str())];
        if !texts.map(String::as_str).chain(who.into_iter().flatten()).any(|t| t.contains(LOOK_ALIKES)) {
            let plain_orgs: Vec<Organization> = acceptable.iter().map(defang_organization).collect();
            let mut plain_session = session.clone();
            plain_session.org = session.org.as_deref().map(defang);
            plain_session.identity.sub = defang(&session.identity.sub);
            plain_session.identity.name = session.identity.name.as_deref().map(defang);
            plain_session.identity.email = session.identity.email.as_deref().map(defang);
            let plain_choices: Vec<&Organization> = plain_orgs.iter().collect();
            let plain = crate::pages::organization_selector(Lang::Fr, &plain_session, &plain_choices, "/reports?a=1&b=2");
            for c in markup {
                assert_eq!(page.matches(c).count(), plain.matches(c).count(), "claim text reaches the selector page unescaped ({c:?})");
            }
        }
    }
    session.org = organizations.first().map(|o| o.id.clone());
    super::cookies::check_identity_headers(&session);
}

/// Stand-ins for `<`, `>`, `"` and `'`, one each (private-use characters).
const LOOK_ALIKES: [char; 4] = ['\u{E000}', '\u{E001}', '\u{E002}', '\u{E003}'];

/// `text` with each markup character swapped for its look-alike: one to one, so equal texts stay
/// equal and different ones different.
fn defang(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => LOOK_ALIKES[0],
            '>' => LOOK_ALIKES[1],
            '"' => LOOK_ALIKES[2],
            '\'' => LOOK_ALIKES[3],
            c => c,
        })
        .collect()
}

fn defang_organization(o: &Organization) -> Organization {
    Organization { id: defang(&o.id), name: defang(&o.name), slug: defang(&o.slug), role: defang(&o.role) }
}
