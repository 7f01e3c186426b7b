//! A gateway's per-route narrowing ([`Narrowing`]: `?roles=…&orgs=…` on the auth URL it owns, or
//! Envoy's per-route `context_extensions`), judged after the configuration and only then: one
//! central proxy guards routes with different needs without a rule per route, and no combination
//! of parameters can let through a request the configuration alone refuses.

use super::{Decision, Denial, Policy};
use crate::forward_auth::Narrowing;
use crate::session::Session;

impl Policy {
    /// [`Policy::authorize`], then — only when it allows — every requirement of `narrowing`: the
    /// selected organization listed in each `orgs` list (by id or slug), its role in each `roles`
    /// list; without a selected organization, the same choice or refusal a rule naming
    /// organizations gives. An empty list refuses everyone. A refusal of the configuration is
    /// answered as it is, whatever the narrowing says.
    pub fn authorize_narrowed(&self, session: &Session, method: &http::Method, path: &str, narrowing: &Narrowing) -> Decision {
        match self.authorize(session, method, path) {
            Decision::Allow => self.narrow(session, narrowing),
            refused => refused,
        }
    }

    /// The narrowing's own decision (see [`Policy::authorize_narrowed`]).
    fn narrow(&self, session: &Session, narrowing: &Narrowing) -> Decision {
        let org = session.selected_organization();
        let none: &[String] = &[];
        let requirements = narrowing.orgs.iter().map(|orgs| (orgs.as_slice(), none)).chain(narrowing.roles.iter().map(|roles| (none, roles.as_slice())));
        for (orgs, roles) in requirements {
            // A list that names nothing would mean "any" to the rule logic: here it fails closed.
            // No organization has access, which is what the answer says.
            if orgs.is_empty() && roles.is_empty() {
                return Decision::Deny(Denial::OrganizationNotAllowed);
            }
            let decision = self.judge_membership(session, org, orgs, roles);
            if decision != Decision::Allow {
                return decision;
            }
        }
        Decision::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OrganizationConfig, RoutesConfig, RuleConfig};
    use crate::identity::{Identity, Organization};

    /// A small seeded generator (SplitMix64): the same cases on every run, and a failure names
    /// the seed that shows it.
    struct Draw(u64);

    impl Draw {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    const ROLES: [&str; 6] = ["admin", "member", "owner", "viewer", "", "Admin"];
    const ORGS: [(&str, &str); 4] = [("1", "hotel-a"), ("2", "hotel-b"), ("3", "chain"), ("4", "admin")];

    /// The configurations the property runs against: none, an organization requirement, rules of
    /// every kind (roles, organizations, methods, emails), and both at once.
    fn policies() -> Vec<Policy> {
        let rules = vec![
            RuleConfig { path: "/admin/*".into(), roles: vec!["admin".into()], ..Default::default() },
            RuleConfig { path: "/reports/*".into(), methods: vec!["POST".into()], organizations: vec!["hotel-b".into(), "3".into()], ..Default::default() },
            RuleConfig { path: "/corp/*".into(), email_domains: vec!["hotel.com".into()], ..Default::default() },
            RuleConfig { path: "/Owners/*".into(), roles: vec!["owner".into()], organizations: vec!["1".into()], ..Default::default() },
        ];
        let required = OrganizationConfig { required: true, allowed: vec!["hotel-a".into(), "2".into(), "chain".into()], roles: vec![] };
        let roles = OrganizationConfig { required: false, allowed: vec![], roles: vec!["admin".into(), "member".into()] };
        let routes = RoutesConfig { public: vec!["/assets/*".into()], rules };
        vec![
            Policy::new(&RoutesConfig::default(), &OrganizationConfig::default()),
            Policy::new(&RoutesConfig::default(), &required),
            Policy::new(&routes, &OrganizationConfig::default()),
            Policy::new(&routes, &required),
            Policy::new(&routes, &roles),
        ]
    }

    fn session(d: &mut Draw) -> Session {
        let organizations: Vec<Organization> = (0..d.below(4))
            .map(|_| {
                let (id, slug) = *d.pick(&ORGS);
                Organization { id: id.into(), slug: slug.into(), name: slug.into(), role: d.pick(&ROLES).to_string() }
            })
            .collect();
        let org = match d.below(4) {
            0 => None,
            1 => Some("9".to_string()),
            _ => organizations.first().map(|o| if d.chance(50) { o.id.clone() } else { o.slug.clone() }),
        };
        Session {
            identity: Identity {
                sub: "u".into(),
                email: Some(d.pick(&["ann@hotel.com", "x@evil.com", "a@evil.com@hotel.com"]).to_string()),
                email_verified: Some(d.chance(80)),
                organizations: (!d.chance(10)).then_some(organizations),
                ..Default::default()
            },
            org,
            ..crate::session::sample("s", "u")
        }
    }

    fn path(d: &mut Draw) -> String {
        const SEGMENTS: [&str; 14] = ["admin", "ADMIN", "%61dmin", "reports", "corp", "owners", "Owners", "assets", "x", "..", ".", ";x", "a%2Fb", ""];
        (0..=d.below(4)).map(|_| format!("/{}", d.pick(&SEGMENTS))).collect()
    }

    /// A query string as a gateway or an attacker might write one: our keys among others, in
    /// other cases and encodings, repeated, with lists of known and unknown names, empty items,
    /// spaces and percent-escapes.
    fn query(d: &mut Draw) -> String {
        const KEYS: [&str; 9] = ["roles", "orgs", "roles", "orgs", "Roles", "role", "rd", "org%73", "ro%6Ces"];
        const ITEMS: [&str; 12] = ["admin", "member", "owner", "hotel-a", "1", "2", "chain", "9", "", " admin ", "%61dmin", "admin%2Cmember"];
        let parameter = |d: &mut Draw| {
            let items: Vec<&str> = (0..d.below(4)).map(|_| *d.pick(&ITEMS)).collect();
            let separator = if d.chance(80) { "," } else { "%2C" };
            format!("{}={}", d.pick(&KEYS), items.join(separator))
        };
        (0..d.below(5)).map(|_| parameter(d)).collect::<Vec<_>>().join(if d.chance(90) { "&" } else { ";" })
    }

    fn extensions(d: &mut Draw) -> Vec<(String, String)> {
        const VALUES: [&str; 8] = ["admin", "member,owner", "hotel-b", "1,chain", "", ",", "admin,", "9"];
        let mut pairs: Vec<(String, String)> = Vec::new();
        for key in ["roles", "orgs", "cluster"] {
            if d.chance(50) {
                pairs.push((key.into(), d.pick(&VALUES).to_string()));
            }
        }
        pairs
    }

    /// Whether the selected organization meets every list of `narrowing` on its own terms.
    fn meets(session: &Session, narrowing: &Narrowing) -> bool {
        let Some(o) = session.selected_organization() else { return narrowing.is_empty() };
        narrowing.orgs.iter().all(|list| list.iter().any(|x| *x == o.id || *x == o.slug))
            && narrowing.roles.iter().all(|list| list.contains(&o.role))
    }

    #[test]
    fn no_narrowing_lets_through_what_the_configuration_refuses() {
        let policies = policies();
        let methods = ["GET", "POST", "DELETE", "head", "OPTIONS"].map(|m| http::Method::from_bytes(m.as_bytes()).unwrap());
        let mut d = Draw(0x7472_6f75_7373_6561);
        let (mut allowed, mut narrowed) = (0, 0);
        for case in 0..60_000 {
            let seed = d.0;
            let policy = d.pick(&policies);
            let session = session(&mut d);
            let (method, path) = (d.pick(&methods).clone(), path(&mut d));
            let narrowing = if d.chance(50) { Narrowing::from_query(Some(&query(&mut d))) } else { Narrowing::from_pairs(extensions(&mut d)) };
            let alone = policy.authorize(&session, &method, &path);
            let with = policy.authorize_narrowed(&session, &method, &path, &narrowing);
            let case_name = format!("case {case} (seed {seed:#x}): {method} {path} {narrowing:?} org {:?} of {:?}", session.org, session.identity.organizations);
            if with == Decision::Allow {
                allowed += 1;
                assert_eq!(alone, Decision::Allow, "narrowing widened {case_name}");
                assert!(meets(&session, &narrowing), "allowed without meeting the narrowing: {case_name}");
            }
            if alone != Decision::Allow {
                assert_eq!(with, alone, "a refusal of the configuration must be answered as it is: {case_name}");
            } else if with != Decision::Allow {
                narrowed += 1;
            }
            if narrowing.is_empty() {
                assert_eq!(with, alone, "no narrowing changes nothing: {case_name}");
            }
        }
        // The generator reaches both sides of the property, not only refusals.
        assert!(allowed > 5_000 && narrowed > 5_000, "allowed {allowed}, narrowed {narrowed}");
    }

    #[test]
    fn narrowing_follows_the_rules_logic() {
        let policy = Policy::new(&RoutesConfig::default(), &OrganizationConfig::default());
        let mut s = crate::session::sample("s", "u");
        s.identity.organizations = Some(vec![
            Organization { id: "1".into(), slug: "hotel-a".into(), name: "A".into(), role: "admin".into() },
            Organization { id: "2".into(), slug: "hotel-b".into(), name: "B".into(), role: "member".into() },
        ]);
        let get = http::Method::GET;
        let judge = |s: &Session, q: &str| policy.authorize_narrowed(s, &get, "/x", &Narrowing::from_query(Some(q)));
        // No organization selected: choose one first, as a rule naming roles asks.
        assert_eq!(judge(&s, "roles=admin"), Decision::ChooseOrganization);
        s.org = Some("1".into());
        assert_eq!(judge(&s, "roles=admin"), Decision::Allow);
        assert_eq!(judge(&s, "orgs=hotel-a&roles=member,admin"), Decision::Allow);
        assert_eq!(judge(&s, "orgs=1"), Decision::Allow, "by id or slug");
        assert!(matches!(judge(&s, "roles=member"), Decision::Deny(Denial::RoleNotAllowed { .. })));
        assert_eq!(judge(&s, "orgs=hotel-b"), Decision::Deny(Denial::OrganizationNotAllowed));
        // Each repetition is one more requirement; an empty list refuses everyone.
        assert!(matches!(judge(&s, "roles=admin&roles=member"), Decision::Deny(_)));
        assert_eq!(judge(&s, "roles="), Decision::Deny(Denial::OrganizationNotAllowed));
        assert_eq!(judge(&s, "orgs=,"), Decision::Deny(Denial::OrganizationNotAllowed));
        assert_eq!(judge(&s, "rd=/&other=x"), Decision::Allow);
    }
}
