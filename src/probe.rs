//! `trousseau-proxy check-config --probe`: from a valid configuration, the end-to-end checks that
//! catch what a configuration file cannot show — Trousseau's discovery and keys reached, the client
//! credentials accepted, the clocks in step, Redis answering — one line per item, with the fix for
//! each failure.
//!
//! The client credentials are proved without a user: a deliberately invalid authorization code is
//! sent to the token endpoint with them. Trousseau answers `invalid_grant` when it accepted the
//! client (only the code is wrong) and `invalid_client` when it did not.

use std::time::{Duration, SystemTime};

use crate::config::Settings;
use crate::oidc::{LoginState, Oidc, OidcError};
use crate::session::redis::{Redis, RedisTarget};

/// How far Trousseau's clock may be from ours before ID tokens are at risk (their `iat`, `exp`).
const CLOCK_TOLERANCE: Duration = Duration::from_secs(30);

/// One item of the checklist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub item: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    pub fix: Option<String>,
}

impl Check {
    fn pass(item: &'static str, detail: impl Into<String>) -> Check {
        Check { item, ok: true, detail: detail.into(), fix: None }
    }

    fn fail(item: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { item, ok: false, detail: detail.into(), fix: Some(fix.into()) }
    }

    /// The checklist line (and its fix, indented, on the next line).
    pub fn line(&self) -> String {
        match &self.fix {
            None => format!("✔ {}: {}", self.item, self.detail),
            Some(fix) => format!("✘ {}: {}\n    fix: {fix}", self.item, self.detail),
        }
    }
}

/// Runs every check against what `settings` name.
pub async fn probe(settings: &Settings) -> Vec<Check> {
    let mut checks = Vec::new();
    match Oidc::new(settings.oidc.clone()) {
        Ok(oidc) => trousseau(&oidc, settings, &mut checks).await,
        Err(e) => checks.push(Check::fail("oidc.ca_file", e.to_string(), "give a readable PEM file of the CA that signed Trousseau's certificate")),
    }
    if let Some(target) = &settings.session.redis {
        checks.push(redis(target, settings).await);
    }
    checks
}

async fn trousseau(oidc: &Oidc, settings: &Settings, checks: &mut Vec<Check>) {
    let issuer = &settings.oidc.issuer;
    match oidc.discover().await {
        Ok(()) => checks.push(Check::pass("discovery", format!("{issuer} answered with a matching issuer"))),
        Err(e) => {
            let fix = if !issuer.ends_with('/') {
                format!("oidc.issuer must be Trousseau's issuer exactly, trailing slash included: `{issuer}/`")
            } else if matches!(e, OidcError::Unreachable(_)) {
                "check the issuer's host and port, and that this machine reaches it (DNS, firewall, proxy, oidc.ca_file)".to_string()
            } else {
                "oidc.issuer must be the issuer Trousseau shows for this application: https://auth.keysuite.app/application/o/<slug>/".to_string()
            };
            checks.push(Check::fail("discovery", e.to_string(), fix));
            checks.push(Check::fail("signing keys", "not checked: discovery failed", "fix discovery first"));
            checks.push(Check::fail("client credentials", "not checked: discovery failed", "fix discovery first"));
            return;
        }
    }
    checks.push(match oidc.jwks() {
        Ok(keys) if !keys.keys().is_empty() => Check::pass("signing keys", format!("{} key(s) published", keys.keys().len())),
        Ok(_) => Check::fail("signing keys", "Trousseau publishes no key", "give the provider in Trousseau a signing key"),
        Err(e) => Check::fail("signing keys", e.to_string(), "check that the JWKS URL in Trousseau's discovery document is reachable from here"),
    });
    checks.push(credentials(oidc, settings).await);
    checks.push(clock(oidc).await);
}

async fn credentials(oidc: &Oidc, settings: &Settings) -> Check {
    const ITEM: &str = "client credentials";
    let probe = LoginState {
        state: "trousseau-proxy-probe".into(),
        nonce: "trousseau-proxy-probe".into(),
        pkce_verifier: "trousseau-proxy-probe-pkce-verifier-that-is-long-enough-0123456789".into(),
        return_to: "/".into(),
        started_at: 0,
    };
    let client = &settings.oidc.client_id;
    match oidc.exchange_code("trousseau-proxy-probe-invalid-code", &probe).await {
        Err(OidcError::Rejected { error, .. }) if error == "invalid_grant" => {
            Check::pass(ITEM, format!("`{client}` accepted (a deliberately invalid code was refused as invalid_grant)"))
        }
        Err(OidcError::Rejected { error, .. }) if error == "invalid_client" || error == "unauthorized_client" => Check::fail(
            ITEM,
            format!("Trousseau refused the client `{client}` ({error})"),
            "copy oidc.client_id and oidc.client_secret from this application's provider in Trousseau (in a secret file, the secret alone)",
        ),
        Err(e) => Check::fail(ITEM, e.to_string(), "the token endpoint should answer invalid_grant to an invalid code; check the provider's settings in Trousseau"),
        Ok(_) => Check::fail(ITEM, "an invalid code was accepted", "this is not a Trousseau token endpoint one can trust"),
    }
}

async fn clock(oidc: &Oidc) -> Check {
    const ITEM: &str = "clock";
    let theirs = match oidc.server_time().await {
        Ok(t) => t,
        Err(e) => return Check::fail(ITEM, e.to_string(), "Trousseau's answers should carry a Date header"),
    };
    let ours = SystemTime::now();
    let (skew, ahead) = match ours.duration_since(theirs) {
        Ok(d) => (d, "ahead of"),
        Err(e) => (e.duration(), "behind"),
    };
    let detail = format!("this machine is {}s {ahead} Trousseau", skew.as_secs());
    if skew > CLOCK_TOLERANCE {
        Check::fail(ITEM, detail, "synchronise this machine's clock (NTP): ID tokens carry times and would be refused as not yet valid or expired")
    } else {
        Check::pass(ITEM, detail)
    }
}

async fn redis(target: &RedisTarget, settings: &Settings) -> Check {
    const ITEM: &str = "redis";
    let ca = match &settings.session.redis_ca_file {
        Some(path) => match std::fs::read(path) {
            Ok(pem) => Some(pem),
            Err(e) => return Check::fail(ITEM, format!("session.redis_ca_file: {}: {e}", path.display()), "give a readable PEM file"),
        },
        None => None,
    };
    let redis = match Redis::connect(target, ca) {
        Ok(r) => r,
        Err(e) => return Check::fail(ITEM, e, "see the README's Redis settings: session.redis_url, redis_sentinel or redis_cluster"),
    };
    match redis.run::<String>(&::redis::cmd("PING")).await {
        Ok(_) => Check::pass(ITEM, format!("{} answered PING", redis.display())),
        Err(e) => Check::fail(
            ITEM,
            e.to_string(),
            "check the Redis settings (session.redis_url, redis_sentinel or redis_cluster: hosts, ports, passwords) and that this machine reaches Redis; requests that need it are answered 503 until it does",
        ),
    }
}
