//! The IdP's one RS256 key: signs ID and logout tokens, is published as a JWK, and recognizes
//! the IdP's own tokens again (`id_token_hint`).

use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::DevIdpError;

/// An in-memory RSA-2048 key with its `kid` (the RFC 7638 thumbprint) and JWK.
pub(super) struct SigningKey {
    pair: KeyPair,
    kid: String,
    jwk: Value,
}

impl SigningKey {
    /// Generates a fresh key.
    pub(super) fn generate() -> Result<SigningKey, DevIdpError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| DevIdpError::KeyGeneration)?;
        let public = pair.public_key();
        let n = B64.encode(public.modulus().big_endian_without_leading_zero());
        let e = B64.encode(public.exponent().big_endian_without_leading_zero());
        // RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
        let thumbprint_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = super::web::sha256_b64(thumbprint_input.as_bytes());
        let jwk = json!({ "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": n, "e": e });
        Ok(SigningKey { pair, kid, jwk })
    }

    /// The public key as a JWK (`kty`, `alg`, `use`, `kid`, `n`, `e`).
    pub(super) fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// A compact JWS over `claims`; header `{"alg":"RS256","kid":..,"typ":typ}` (no `typ` when
    /// empty).
    pub(super) fn sign(
        &self,
        claims: &Value,
        typ: &str,
    ) -> Result<String, aws_lc_rs::error::Unspecified> {
        let header = if typ.is_empty() {
            json!({ "alg": "RS256", "kid": self.kid })
        } else {
            json!({ "alg": "RS256", "kid": self.kid, "typ": typ })
        };
        self.sign_with_header(&header, claims)
    }

    /// A compact JWS over `claims` with exactly this `header` (its `alg` should say RS256): tests
    /// forge tokens with headers the IdP would never write (`crit`, an unknown `kid`).
    pub(super) fn sign_with_header(
        &self,
        header: &Value,
        claims: &Value,
    ) -> Result<String, aws_lc_rs::error::Unspecified> {
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &rng,
            signing_input.as_bytes(),
            &mut sig,
        )?;
        Ok(format!("{signing_input}.{}", B64.encode(sig)))
    }

    /// The claims of `jwt` if this key signed it (RS256, our `kid`); says nothing about expiry.
    pub(super) fn verify(&self, jwt: &str) -> Option<serde_json::Map<String, Value>> {
        let (signing_input, sig) = jwt.rsplit_once('.')?;
        let (header, payload) = signing_input.split_once('.')?;
        if payload.contains('.') {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(header).ok()?).ok()?;
        if header.get("alg")?.as_str()? != "RS256" || header.get("kid")?.as_str()? != self.kid {
            return None;
        }
        let sig = B64.decode(sig).ok()?;
        let public = UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            self.pair.public_key().as_ref(),
        );
        public.verify(signing_input.as_bytes(), &sig).ok()?;
        match serde_json::from_slice(&B64.decode(payload).ok()?).ok()? {
            Value::Object(claims) => Some(claims),
            _ => None,
        }
    }
}
