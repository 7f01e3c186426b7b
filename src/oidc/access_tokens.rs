//! Opaque Trousseau access tokens from API clients: who they belong to (userinfo) and whether
//! they were issued to this client (introspection).

use super::*;

impl Oidc {
    /// Asks Trousseau's userinfo endpoint who holds this (opaque) access token. A refused token
    /// is `Rejected { error: "invalid_token" }`; an unreachable IdP is `Unreachable`.
    pub async fn userinfo(&self, access_token: &str) -> Result<Identity, OidcError> {
        let provider = self.provider()?;
        let url = provider
            .metadata
            .userinfo_endpoint()
            .ok_or_else(|| OidcError::Protocol("Trousseau published no userinfo endpoint".into()))?
            .url()
            .clone();
        let request = http::Request::get(url.as_str())
            .header(http::header::AUTHORIZATION, format!("Bearer {access_token}"))
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|_| OidcError::Rejected { error: "invalid_token".into(), description: None })?;
        let response = (self.http_client())(request).await.map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let status = response.status();
        if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
            return Err(OidcError::Rejected { error: "invalid_token".into(), description: None });
        }
        if status.is_server_error() {
            return Err(OidcError::Unreachable(format!("userinfo answered {status}")));
        }
        if !status.is_success() {
            return Err(OidcError::Protocol(format!("userinfo answered {status}")));
        }
        let mut identity: Identity = serde_json::from_slice(response.body())
            .map_err(|e| OidcError::Protocol(format!("userinfo answer: {e}")))?;
        if identity.sub.is_empty() {
            return Err(OidcError::Protocol("userinfo answer has no sub".into()));
        }
        for field in [
            &mut identity.email,
            &mut identity.name,
            &mut identity.given_name,
            &mut identity.family_name,
            &mut identity.picture,
            &mut identity.trousseau_user_id,
            &mut identity.locale,
        ] {
            if field.as_deref() == Some("") {
                *field = None;
            }
        }
        if identity.email.is_none() {
            identity.email_verified = None;
        }
        Ok(identity)
    }
}

/// What token introspection (RFC 7662) says about an access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introspection {
    /// The token is live (issued, unexpired, not revoked).
    pub active: bool,
    /// It was issued to us: its `client_id` is ours, or its `aud` names our client id.
    pub for_us: bool,
    /// The user it speaks for, when the answer says.
    pub sub: Option<String>,
    /// Trousseau's session the token belongs to (Authentik answers with the ID token's claims,
    /// `sid` among them), matched by back-channel logout.
    pub sid: Option<String>,
    /// When the user authenticated (`auth_time`), else when the token was issued (`iat`), in unix
    /// seconds: a back-channel logout by `sub` ends what began before it.
    pub since: Option<u64>,
}

/// The members of an introspection answer we read; the rest is ignored. A member of the wrong
/// type makes the whole answer a protocol error.
#[derive(Deserialize)]
struct IntrospectionAnswer {
    active: bool,
    #[serde(default)]
    client_id: Option<String>,
    /// A string or an array of strings (RFC 7662 §2.2).
    #[serde(default)]
    aud: Option<serde_json::Value>,
    #[serde(default)]
    sub: Option<String>,
    /// Read leniently (any type, ignored when not what we expect): they only ever narrow access.
    #[serde(default)]
    sid: Option<serde_json::Value>,
    #[serde(default)]
    auth_time: Option<serde_json::Value>,
    #[serde(default)]
    iat: Option<serde_json::Value>,
}

impl Oidc {
    /// Asks Trousseau's introspection endpoint (RFC 7662) about an access token, authenticating
    /// with `client_secret_post`. A refused client is `Rejected { error: "invalid_client" }`; an
    /// unreachable IdP or a 5xx is `Unreachable`. Neither the token nor the secret ever appears in
    /// an error.
    pub async fn introspect(&self, token: &str) -> Result<Introspection, OidcError> {
        let provider = self.provider()?;
        let endpoint = provider
            .metadata
            .additional_metadata()
            .introspection_endpoint
            .as_deref()
            .ok_or_else(|| OidcError::Protocol("Trousseau advertises no introspection endpoint".into()))?;
        let url = url::Url::parse(endpoint).map_err(|e| OidcError::Protocol(format!("introspection_endpoint: {e}")))?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("client_secret", &self.settings.client_secret)
            .finish();
        let request = http::Request::post(url.as_str())
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json")
            .body(body.into_bytes())
            .map_err(|_| OidcError::Protocol("the introspection request could not be built".into()))?;
        let response = (self.http_client())(request).await.map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let status = response.status();
        if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
            return Err(OidcError::Rejected {
                error: "invalid_client".into(),
                description: Some(format!("the introspection endpoint answered {status}")),
            });
        }
        if status.is_server_error() {
            return Err(OidcError::Unreachable(format!("introspection answered {status}")));
        }
        if !status.is_success() {
            return Err(OidcError::Protocol(format!("introspection answered {status}")));
        }
        // The parser's position only: its message may quote the answer.
        let answer: IntrospectionAnswer = serde_json::from_slice(response.body()).map_err(|e| {
            OidcError::Protocol(format!(
                "introspection answer is malformed ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let ours = self.settings.client_id.as_str();
        let aud_ok = match &answer.aud {
            Some(serde_json::Value::String(a)) => a == ours,
            Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(ours)),
            _ => false,
        };
        let sid = answer.sid.as_ref().and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(String::from);
        let since = [&answer.auth_time, &answer.iat].into_iter().find_map(|v| v.as_ref().and_then(serde_json::Value::as_u64));
        Ok(Introspection {
            active: answer.active,
            for_us: answer.client_id.as_deref() == Some(ours) || aud_ok,
            sub: answer.sub,
            sid,
            since,
        })
    }
}
