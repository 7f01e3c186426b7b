//! Audit events: who signed in, out, was refused or logged out by Trousseau — one JSON object per
//! line on the target `trousseau_proxy::audit`, apart from the access lines.
//!
//! Every line has `timestamp`, `level`, `target`, `event` (its kind), `sub` (the user, when known),
//! `request_id` and `trace_id`, then the event's own fields. Never a token, a cookie, an email or
//! Trousseau's free-text error description: only codes, ids and rule names.
//!
//! Written like the access lines (the log's own descriptor, with this worker's batch) but at once,
//! and filtered like every event (`TROUSSEAU_PROXY_LOG=info,trousseau_proxy::audit=off` turns them off). On a
//! terminal they go through tracing, as fields.

use serde::Serialize;

/// The target of the audit lines.
pub const AUDIT_TARGET: &str = "trousseau_proxy::audit";

/// What happened.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A sign-in completed: a new session.
    SignInCompleted {
        /// Trousseau's session (`sid`), when the ID token has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        sid: Option<&'a str>,
        /// The organization selected at once (the user's only acceptable one), if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        organization: Option<&'a str>,
    },
    /// A sign-in failed at the callback: Trousseau's error code (`access_denied`, `invalid_grant`
    /// …) or the proxy's (`invalid_id_token`, `protocol_error`, `trousseau_unreachable`).
    SignInFailed {
        /// The code.
        error: &'a str,
    },
    /// Trousseau refused the session's refresh token (the account was disabled, the session
    /// revoked): the session ended.
    RefreshRefused {
        /// Trousseau's error code.
        error: &'a str,
    },
    /// The user signed out (`/.trousseau/logout`).
    Logout,
    /// A back-channel logout from Trousseau was recorded: every session of that `sid` (or of that
    /// user, logged out everywhere) ends, here and on the other replicas.
    BackchannelLogout {
        /// The Trousseau session logged out.
        #[serde(skip_serializing_if = "Option::is_none")]
        sid: Option<&'a str>,
        /// The user logged out everywhere: set only when the token names no `sid`.
        #[serde(skip_serializing_if = "Option::is_none")]
        logout_sub: Option<&'a str>,
        /// Websockets and streams of those sessions closed on this replica.
        open_connections_ended: usize,
    },
    /// The user chose another organization.
    OrganizationSwitched {
        /// The organization before, if one was selected.
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<&'a str>,
        /// The organization chosen.
        to: &'a str,
    },
    /// A signed-in request was refused by the policy (403).
    RequestDenied {
        /// What refused it: `routes.rules[2] (/admin/*)` or `organization`.
        rule: &'a str,
        /// Why, as the 403's `error` says (`role_not_allowed`, `email_not_allowed` …).
        reason: &'a str,
        /// The request's method and path (without the query).
        method: &'a str,
        /// The path.
        path: &'a str,
    },
    /// An API client's bearer token was refused (401).
    BearerRefused {
        /// Why: `inactive` (expired, revoked, unknown), `other_application`, `logged_out` …
        reason: &'a str,
    },
}

/// One audit line: the event and the request it happened in.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// The user's `sub`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<&'a str>,
    /// The request's id (`X-Request-Id`).
    pub request_id: &'a str,
    /// The request's W3C trace id.
    pub trace_id: &'a str,
    /// What happened.
    #[serde(flatten)]
    pub event: Event<'a>,
}

/// Writes `record` as one JSON line on [`AUDIT_TARGET`], when that target is on.
pub fn record(record: &Record<'_>) {
    if !tracing::enabled!(target: AUDIT_TARGET, tracing::Level::INFO) {
        return;
    }
    let written = crate::logging::write_line(true, |out| {
        out.extend_from_slice(b"{\"timestamp\":\"");
        crate::logging::write_timestamp(out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"trousseau_proxy::audit\",");
        let start = out.len();
        if serde_json::to_writer(&mut *out, record).is_ok() && out.len() > start && out[start] == b'{' {
            // Our fields follow the fixed ones: drop the record's own opening brace.
            out.remove(start);
        } else {
            out.truncate(start.saturating_sub(1));
            out.push(b'}');
        }
        out.push(b'\n');
    });
    if !written {
        let fields = serde_json::to_string(record).unwrap_or_default();
        tracing::info!(target: AUDIT_TARGET, audit = %fields, "audit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_flat_object_with_the_event_kind_and_no_absent_fields() {
        let record = Record {
            sub: Some("u-1"),
            request_id: "rid",
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            event: Event::RequestDenied { rule: "routes.rules[0] (/admin/*)", reason: "role_not_allowed", method: "POST", path: "/admin/x" },
        };
        let value = serde_json::to_value(&record).unwrap();
        assert_eq!(value["event"], "request_denied");
        assert_eq!(value["rule"], "routes.rules[0] (/admin/*)");
        assert_eq!(value["sub"], "u-1");
        let logout = serde_json::to_value(Record { sub: None, request_id: "r", trace_id: "t", event: Event::Logout }).unwrap();
        assert_eq!(logout, serde_json::json!({"event": "logout", "request_id": "r", "trace_id": "t"}));
        let signed_in = serde_json::to_value(Record { sub: Some("u"), request_id: "r", trace_id: "t", event: Event::SignInCompleted { sid: None, organization: None } }).unwrap();
        assert_eq!(signed_in.as_object().unwrap().len(), 4, "{signed_in}");
    }
}
