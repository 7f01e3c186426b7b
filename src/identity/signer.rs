//! The keys our assertions are signed with: loaded from PKCS#8 PEM (or one made at start),
//! published as a JWKS, and the ES256 signature itself.

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::PrivateKeyDer;

/// Why signing keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No key at all.
    #[error("no signing key configured (at least one ES256 key is needed)")]
    NoSigningKey,
    /// The text at this position of the list is not valid PEM.
    #[error("signing key #{index}: not valid PEM: {source}")]
    Pem {
        /// Position in the list of PEM texts, from 0.
        index: usize,
        /// What the PEM parser said.
        source: rustls_pki_types::pem::Error,
    },
    /// The text at this position holds no private key.
    #[error("signing key #{index}: no PRIVATE KEY block found")]
    NoKeyInPem {
        /// Position in the list of PEM texts, from 0.
        index: usize,
    },
    /// A key that is not an EC P-256 key (ES256).
    #[error("signing key #{index}: not an EC P-256 (ES256) private key: {source}")]
    NotEs256 {
        /// Position in the list of PEM texts, from 0.
        index: usize,
        /// Why aws-lc rejected it.
        source: aws_lc_rs::error::KeyRejected,
    },
    /// The key's public point is not an uncompressed P-256 point (cannot happen with aws-lc).
    #[error("signing key #{index}: unexpected public key encoding")]
    PublicKeyEncoding {
        /// Position in the list of PEM texts, from 0.
        index: usize,
    },
}

/// One ES256 key with everything derived from it once.
struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
    /// base64url of the JWS protected header `{"alg":"ES256","typ":"JWT","kid":…}`.
    header_b64: String,
    /// The public JWK, `kid` included.
    jwk: serde_json::Value,
}

impl SigningKey {
    fn new(pair: EcdsaKeyPair) -> Option<SigningKey> {
        // Uncompressed SEC1 point: 0x04 | x (32 bytes) | y (32 bytes).
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return None;
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        // RFC 7638 thumbprint: the required members, lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()));
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": kid});
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": x, "y": y, "use": "sig", "alg": "ES256", "kid": kid,
        });
        Some(SigningKey {
            pair,
            kid,
            header_b64,
            jwk,
        })
    }
}

/// Signs identity assertions. Invariant: at least one key; the first signs, all are published in
/// [`Signer::jwks_json`] (rotation: add a key at the end, move it first, later remove the old one).
pub struct Signer {
    keys: Vec<SigningKey>,
    jwks: Bytes,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("Signer").field("kids", &kids).finish()
    }
}

impl Signer {
    /// Loads ES256 private keys from PEM texts (PKCS#8 `PRIVATE KEY`, or SEC1 `EC PRIVATE KEY`), each
    /// text holding one or more keys. The first key found signs; all are published. A key listed
    /// twice is published once.
    pub fn from_pem(pems: &[String]) -> Result<Signer, IdentityError> {
        let mut pairs = Vec::new();
        for (index, pem) in pems.iter().enumerate() {
            let before = pairs.len();
            for item in PrivateKeyDer::pem_slice_iter(pem.as_bytes()) {
                let der = item.map_err(|source| IdentityError::Pem { index, source })?;
                let pair = EcdsaKeyPair::from_private_key_der(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    der.secret_der(),
                )
                .map_err(|source| IdentityError::NotEs256 { index, source })?;
                pairs.push((index, pair));
            }
            if pairs.len() == before {
                return Err(IdentityError::NoKeyInPem { index });
            }
        }
        Self::from_pairs(pairs)
    }

    /// A signer with one fresh key (`dev` mode, tests).
    pub fn generate() -> Signer {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .expect("P-256 key generation failed (system random generator unavailable?)");
        Self::from_pairs(vec![(0, pair)]).expect("a generated P-256 key is always usable")
    }

    /// Keys paired with the position of the PEM text they came from (for error messages).
    fn from_pairs(pairs: Vec<(usize, EcdsaKeyPair)>) -> Result<Signer, IdentityError> {
        let mut keys: Vec<SigningKey> = Vec::with_capacity(pairs.len());
        for (index, pair) in pairs {
            let key = SigningKey::new(pair).ok_or(IdentityError::PublicKeyEncoding { index })?;
            if !keys.iter().any(|k| k.kid == key.kid) {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(IdentityError::NoSigningKey);
        }
        let jwks = serde_json::json!({ "keys": keys.iter().map(|k| &k.jwk).collect::<Vec<_>>() });
        Ok(Signer {
            jwks: Bytes::from(jwks.to_string()),
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// The `kid` of the signing key (RFC 7638 SHA-256 thumbprint, base64url).
    pub fn kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// `{"keys":[…]}`: every configured public key, computed once; serve as is.
    pub fn jwks_json(&self) -> Bytes {
        self.jwks.clone()
    }

    /// Compact JWS (ES256, header `{"alg":"ES256","typ":"JWT","kid":…}`) over `claims` as JSON.
    ///
    /// Hand-rolled over aws-lc-rs on purpose: `jsonwebtoken::encode` (12.0, its aws-lc-rs backend)
    /// parses the PKCS#8 key again on every call and serializes the header each time; measured
    /// with the same key and an assertion-sized payload, 20.5 µs a signature here against 33–36 µs
    /// (1.6–1.8×). A signature is made on every assertion cache miss, on the request path. Our
    /// output is checked by jsonwebtoken itself in the tests and by the dev demo app.
    ///
    /// # Panics
    /// Only if `claims` cannot serialize to JSON (a map with non-string keys, a failing custom
    /// `Serialize`), which plain claim structs never do, or if aws-lc cannot sign at all.
    pub fn sign(&self, claims: &impl serde::Serialize) -> String {
        let key = &self.keys[0];
        let payload = serde_json::to_vec(claims).expect("claims serialize to JSON");
        let mut jws = String::with_capacity(key.header_b64.len() + payload.len() * 4 / 3 + 90);
        jws.push_str(&key.header_b64);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut jws);
        let signature = key
            .pair
            .sign(&self.rng, jws.as_bytes())
            .expect("ES256 signing failed");
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jws);
        jws
    }
}

/// A fresh ES256 private key as PKCS#8 PEM (what `keys generate` prints).
pub fn generate_pkcs8_pem() -> String {
    let document = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .and_then(|pair| pair.to_pkcs8v1())
        .expect("P-256 key generation failed (system random generator unavailable?)");
    let body = STANDARD.encode(document.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

