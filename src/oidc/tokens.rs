//! The authorization-code flow and the tokens it yields: the sign-in URL (PKCE, state, nonce),
//! the code exchange, refreshes, and ID-token validation (signature against our JWKS, claims,
//! and the checks the `openidconnect` crate leaves to us).

use super::*;

impl Oidc {
    /// Starts a sign-in: the URL to send the browser to, and the state to keep in its cookie.
    pub fn begin_login(&self, return_to: String) -> Result<(url::Url, LoginState), OidcError> {
        let provider = self.provider()?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = provider.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let login = LoginState {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            return_to,
            started_at: now_secs(),
        };
        Ok((url, login))
    }

    /// Exchanges the authorization code (with the PKCE verifier) and validates the ID token
    /// against the nonce of this sign-in attempt.
    pub async fn exchange_code(&self, code: &str, login: &LoginState) -> Result<Tokens, OidcError> {
        let provider = self.provider()?;
        let http = self.http_client();
        let response = provider
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Protocol(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(login.pkce_verifier.clone()))
            .request_async(&http)
            .await
            .map_err(token_error)?;
        let nonce = Nonce::new(login.nonce.clone());
        self.validated_tokens(&provider, &response, &nonce, None).await
    }

    /// Spends a refresh token. The new ID token (usually without `nonce`) must name the same
    /// `sub`; when Trousseau sends no new ID token the caller keeps the old identity.
    pub async fn refresh(&self, refresh_token: &str, sub: &str) -> Result<Refreshed, OidcError> {
        let provider = self.provider()?;
        let http = self.http_client();
        let response = provider
            .client
            .exchange_refresh_token(&RefreshToken::new(refresh_token.to_string()))
            .map_err(|e| OidcError::Protocol(e.to_string()))?
            .request_async(&http)
            .await
            .map_err(token_error)?;
        let lifetime = response.expires_in().unwrap_or(Duration::from_secs(300));
        let mut refreshed = Refreshed {
            expires_at: now_secs().saturating_add(lifetime.as_secs()),
            access_token: response.access_token().secret().clone(),
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
            id: None,
        };
        if response.id_token().is_some() {
            let tokens = self.validated_tokens(&provider, &response, &NoNonceRequired, Some(sub)).await?;
            refreshed.id = Some((tokens.identity, tokens.sid, tokens.id_token));
        }
        Ok(refreshed)
    }

    /// Validates the ID token of a token response (re-fetching the JWKS once when its `kid` is
    /// unknown) and types its claims.
    pub(super) async fn validated_tokens<N>(
        &self,
        provider: &Provider,
        response: &TrousseauTokenResponse,
        nonce: &N,
        expected_sub: Option<&str>,
    ) -> Result<Tokens, OidcError>
    where
        for<'n> &'n N: openidconnect::NonceVerifier,
    {
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::Protocol("the token response has no id_token".into()))?;
        let claims = match self.verify_claims(provider, id_token, nonce) {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                self.refetch_jwks(provider).await?;
                self.verify_claims(provider, id_token, nonce)
            }
            other => other,
        }
        .map_err(|e| OidcError::InvalidIdToken(e.to_string()))?;

        let sub = claims.subject().as_str().to_string();
        if !plainly_names(&id_token.to_string(), &sub) {
            return Err(OidcError::InvalidIdToken("the ID token does not read as plain JSON (a header or claims that are not UTF-8 JSON, an empty `#` language tag, or no plain `sub`)".into()));
        }
        if sub.is_empty() {
            return Err(OidcError::InvalidIdToken("the ID token names no user (empty sub)".into()));
        }
        if let Some(expected) = expected_sub {
            if expected != sub {
                return Err(OidcError::InvalidIdToken("the refreshed ID token names another user".into()));
            }
        }
        let extra = claims.additional_claims();
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        // `email_verified` speaks about the address: without one (absent or empty) it is left out.
        let email = nonempty(claims.email().map(|e| e.as_str().to_string()));
        let identity = Identity {
            sub,
            email_verified: email.as_ref().and(claims.email_verified()),
            email,
            name: nonempty(claims.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_string())),
            given_name: nonempty(claims.given_name().and_then(|n| n.get(None)).map(|n| n.as_str().to_string())),
            family_name: nonempty(claims.family_name().and_then(|n| n.get(None)).map(|n| n.as_str().to_string())),
            picture: nonempty(claims.picture().and_then(|p| p.get(None)).map(|p| p.as_str().to_string())),
            trousseau_user_id: nonempty(extra.trousseau_user_id.clone()),
            locale: nonempty(claims.locale().map(|l| l.as_str().to_string())),
            organizations: extra.organizations.clone(),
        };
        let lifetime = response.expires_in().unwrap_or(Duration::from_secs(300));
        Ok(Tokens {
            identity,
            sid: extra.sid.clone(),
            expires_at: now_secs().saturating_add(lifetime.as_secs()),
            access_token: response.access_token().secret().clone(),
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
            id_token: id_token.to_string(),
        })
    }

    fn verify_claims<'t, N>(
        &self,
        provider: &Provider,
        id_token: &'t openidconnect::IdToken<TrousseauClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>,
        nonce: &N,
    ) -> Result<&'t openidconnect::IdTokenClaims<TrousseauClaims, CoreGenderClaim>, ClaimsVerificationError>
    where
        for<'n> &'n N: openidconnect::NonceVerifier,
    {
        let jwks = provider.jwks.read().unwrap_or_else(|p| p.into_inner()).clone();
        let verifier: IdTokenVerifier<CoreJsonWebKey> = IdTokenVerifier::new_confidential_client(
            ClientId::new(self.settings.client_id.clone()),
            ClientSecret::new(self.settings.client_secret.clone()),
            provider.metadata.issuer().clone(),
            jwks,
        )
        .set_allowed_algs(ALLOWED_ALGS)
        .set_issue_time_verifier_fn(|iat| {
            let now = chrono_now();
            if iat > now + chrono_skew() {
                Err("the ID token was issued in the future".into())
            } else {
                Ok(())
            }
        });
        id_token.claims(&verifier, nonce)
    }
}

/// Whether the (verified) ID token reads the same to any JSON reader: its header and payload are
/// JSON objects (UTF-8, RFC 7515 §4), the payload has `sub` as `sub`, and no claim name has an
/// empty language tag. The openidconnect crate accepts a header with bytes that are not UTF-8 and
/// reads `"sub#"` as `sub` and `"email#"` as `email` (OpenID Connect's `name#fr` form, with an
/// empty tag): the user the proxy names must be the one any reader of the same token would name.
fn plainly_names(jwt: &str, sub: &str) -> bool {
    use base64::Engine as _;
    let object = |part: Option<&str>| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part?).ok()?;
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).ok()
    };
    let mut parts = jwt.split('.');
    let (Some(_header), Some(claims)) = (object(parts.next()), object(parts.next())) else { return false };
    claims.get("sub").and_then(serde_json::Value::as_str) == Some(sub) && !claims.keys().any(|k| k.ends_with('#'))
}

/// Refreshed ID tokens usually carry no nonce; if one is there we do not know it either.
pub(super) struct NoNonceRequired;

impl openidconnect::NonceVerifier for &NoNonceRequired {
    fn verify(self, _nonce: Option<&Nonce>) -> Result<(), String> {
        Ok(())
    }
}

/// Maps a token-endpoint failure to our error: OAuth error answers keep their code; transport
/// failures and 5xx are "unreachable" (retry later), never "invalid_grant".
fn token_error<E: std::error::Error + 'static>(
    e: RequestTokenError<E, StandardErrorResponse<CoreErrorResponseType>>,
) -> OidcError {
    match e {
        RequestTokenError::ServerResponse(r) => OidcError::Rejected {
            error: r.error().as_ref().to_string(),
            description: r.error_description().cloned(),
        },
        RequestTokenError::Request(e) => OidcError::Unreachable(error_chain(&e)),
        RequestTokenError::Parse(e, _) => OidcError::Protocol(format!("token response: {e}")),
        RequestTokenError::Other(text) if text.contains("Server returned") || text.contains("status code 5") => {
            OidcError::Unreachable(text)
        }
        RequestTokenError::Other(text) => OidcError::Protocol(text),
    }
}

