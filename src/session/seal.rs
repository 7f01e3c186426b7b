//! Sealing: authenticated encryption of everything we hand to the browser, with key rotation.
//!
//! A sealed value is `base64url-no-pad(version | key id | nonce | ciphertext | tag)`, AES-256-GCM with a
//! random 96-bit nonce. The *purpose* (`"session"`, `"state"`, ...) is the additional authenticated
//! data, so a value sealed for one purpose never opens as another: a state cookie cannot be replayed
//! as a session cookie.
//!
//! Rotation follows the usual add → swap → remove dance: the first configured secret seals, every
//! secret opens. The key id byte lets [`Sealer::open`] go straight to the right key instead of trying
//! them all.
//!
//! Every key is bound to one application ([`AppBinding`]: issuer, `client_id`, `public_url`, in the
//! HKDF info): two proxies given the same secret by mistake still derive different keys, so a
//! cookie, handle, login state or Redis record of one never opens at the other.

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::{digest, hkdf};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, Engine as _};

/// Fewest bytes a secret may have: AES-256 wants 256 bits of entropy.
pub const MIN_SECRET_LEN: usize = 32;

/// Format version, first byte of every sealed value. Bumped if the layout or derivation changes.
/// Version 1 keys were not bound to the application: its values are refused (no session).
const VERSION: u8 = 2;
/// HKDF salt and the start of the info: fixed, so the same secret and application always derive the
/// same key (in every replica). The [`AppBinding`] completes the info.
const HKDF_SALT: &[u8] = b"trousseau-proxy";
const HKDF_INFO: &[u8] = b"session-seal-v2";
/// AES-GCM tag length.
const TAG_LEN: usize = 16;
/// version + key id + nonce + tag: the smallest blob that can possibly open.
const OVERHEAD: usize = 2 + NONCE_LEN + TAG_LEN;
/// Nothing we seal comes near this; refusing bigger inputs bounds the work a forged cookie can cause.
const MAX_SEALED_CHARS: usize = 256 * 1024;

/// Why secrets could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The list of secrets is empty.
    #[error("no session secret configured (at least one is needed)")]
    NoSecrets,
    /// The secret at this position of the list is too short.
    #[error("session secret #{index} has {len} bytes; at least {MIN_SECRET_LEN} are needed")]
    ShortSecretAt {
        /// Position in the list, from 0.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// The secret text is not base64 (standard or url-safe, padded or not).
    #[error("session secret is not base64 (standard or url-safe alphabet)")]
    NotBase64,
    /// The secret decodes to fewer than [`MIN_SECRET_LEN`] bytes.
    #[error("session secret decodes to {len} bytes; at least {MIN_SECRET_LEN} are needed")]
    TooShort {
        /// Decoded length in bytes.
        len: usize,
    },
}

/// The application every sealed value belongs to: what tells two proxies apart even when they
/// were given the same secret. Every replica of one application has the same three values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppBinding<'a> {
    /// `oidc.issuer`, exactly as configured.
    pub issuer: &'a str,
    /// `oidc.client_id`.
    pub client_id: &'a str,
    /// `public_url` (its origin, without trailing slash).
    pub public_url: &'a str,
}

impl AppBinding<'_> {
    /// The three values, each length-prefixed so no two bindings encode alike.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HKDF_INFO.len() + self.issuer.len() + self.client_id.len() + self.public_url.len() + 24);
        out.extend_from_slice(HKDF_INFO);
        for part in [self.issuer, self.client_id, self.public_url] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }

    /// A short, stable, non-secret name of this application (hex), for namespacing shared state
    /// such as Redis index keys.
    pub fn tag(&self) -> String {
        let digest = digest::digest(&digest::SHA256, &self.encode());
        digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One derived key and its id byte.
struct Key {
    id: u8,
    /// Bytes 1–4 of SHA-256(key): tells replicas' sealing keys apart without revealing them.
    fingerprint: u32,
    aead: RandomizedNonceKey,
}

/// Seals and opens values with the configured secrets. Invariant: holds at least one key, and the
/// first one is the one that seals. Cheap to share (`Arc`), safe to use from any thread.
pub struct Sealer {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material never reaches logs; the ids are enough to tell configurations apart.
        let ids: Vec<u8> = self.keys.iter().map(|k| k.id).collect();
        f.debug_struct("Sealer").field("key_ids", &ids).finish()
    }
}

impl Sealer {
    /// The sealing key's fingerprint (4 bytes of its SHA-256): two replicas with the same value
    /// seal alike. Nothing about the key can be learned from it.
    pub fn fingerprint(&self) -> u32 {
        self.keys[0].fingerprint
    }

    /// Derives one AES-256-GCM key per secret (HKDF-SHA256), bound to `app`. The first secret
    /// seals; all open.
    pub fn new(secrets: &[Vec<u8>], app: AppBinding<'_>) -> Result<Sealer, SealError> {
        if secrets.is_empty() {
            return Err(SealError::NoSecrets);
        }
        let info = app.encode();
        let mut keys = Vec::with_capacity(secrets.len());
        for (index, secret) in secrets.iter().enumerate() {
            if secret.len() < MIN_SECRET_LEN {
                return Err(SealError::ShortSecretAt {
                    index,
                    len: secret.len(),
                });
            }
            keys.push(derive_key(secret, &info));
        }
        Ok(Sealer { keys })
    }

    /// Seals `plaintext` for `purpose` with the first key. The output is URL- and cookie-safe.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> String {
        let key = &self.keys[0];
        let mut in_out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        in_out.extend_from_slice(plaintext);
        // Fails only if the system RNG does, which leaves nothing sensible to do but stop.
        let nonce = key
            .aead
            .seal_in_place_append_tag(Aad::from(purpose.as_bytes()), &mut in_out)
            .expect("AES-GCM sealing failed (system random generator unavailable?)");

        let mut blob = Vec::with_capacity(2 + NONCE_LEN + in_out.len());
        blob.push(VERSION);
        blob.push(key.id);
        blob.extend_from_slice(nonce.as_ref());
        blob.extend_from_slice(&in_out);
        URL_SAFE_NO_PAD.encode(blob)
    }

    /// Opens a value sealed for `purpose` by any configured key. `None` on any problem at all
    /// (bad base64, truncated, unknown key, tampered, other purpose); never panics.
    pub fn open(&self, purpose: &str, sealed: &str) -> Option<Vec<u8>> {
        if sealed.len() > MAX_SEALED_CHARS {
            return None;
        }
        let blob = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if blob.len() < OVERHEAD || blob[0] != VERSION {
            return None;
        }
        let key_id = blob[1];
        let nonce: [u8; NONCE_LEN] = blob[2..2 + NONCE_LEN].try_into().ok()?;
        let ciphertext = &blob[2 + NONCE_LEN..];

        // Usually exactly one key carries this id; on a collision each candidate gets a try.
        self.keys.iter().filter(|k| k.id == key_id).find_map(|key| {
            let mut in_out = ciphertext.to_vec();
            let plain_len = key
                .aead
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(purpose.as_bytes()),
                    &mut in_out,
                )
                .ok()?
                .len();
            in_out.truncate(plain_len);
            Some(in_out)
        })
    }

    /// The length of what [`Sealer::seal`] returns for a plaintext of `plaintext_len` bytes.
    pub fn sealed_len(plaintext_len: usize) -> usize {
        // Unpadded base64: 4 characters per 3 bytes, rounded up.
        (4 * (OVERHEAD + plaintext_len)).div_ceil(3)
    }
}

/// HKDF-SHA256(secret, info = version label + application) → AES-256-GCM key, plus its id: the
/// first byte of SHA-256(key).
fn derive_key(secret: &[u8], info: &[u8]) -> Key {
    let mut key_bytes = [0u8; 32];
    hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT)
        .extract(secret)
        .expand(&[info], hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut key_bytes))
        // 32 bytes is the hash length, always a valid HKDF output length.
        .expect("HKDF-SHA256 expanding to 32 bytes cannot fail");
    let hash = digest::digest(&digest::SHA256, &key_bytes);
    let id = hash.as_ref()[0];
    let fingerprint = u32::from_be_bytes([hash.as_ref()[1], hash.as_ref()[2], hash.as_ref()[3], hash.as_ref()[4]]);
    let aead = RandomizedNonceKey::new(&AES_256_GCM, &key_bytes)
        .expect("a 32-byte key is always a valid AES-256-GCM key");
    Key { id, fingerprint, aead }
}

/// Decodes a configured secret: standard or url-safe base64, padded or not, surrounding whitespace
/// ignored. At least [`MIN_SECRET_LEN`] decoded bytes.
pub fn parse_secret(text: &str) -> Result<Vec<u8>, SealError> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&alphabet::URL_SAFE, config);
    let text = text.trim();
    let bytes = standard
        .decode(text)
        .or_else(|_| url_safe.decode(text))
        .map_err(|_| SealError::NotBase64)?;
    if bytes.len() < MIN_SECRET_LEN {
        return Err(SealError::TooShort { len: bytes.len() });
    }
    Ok(bytes)
}

/// A fresh secret: 32 random bytes, standard base64 (what `keys generate` prints).
pub fn generate_secret() -> String {
    base64::engine::general_purpose::STANDARD.encode(crate::util::id::random_bytes::<32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: AppBinding<'static> = AppBinding {
        issuer: "https://auth.keysuite.app/application/o/app/",
        client_id: "app-oidc",
        public_url: "https://app.example.com",
    };

    fn sealer(secrets: &[&[u8]]) -> Sealer {
        bound_sealer(secrets, APP)
    }

    fn bound_sealer(secrets: &[&[u8]], app: AppBinding<'_>) -> Sealer {
        Sealer::new(&secrets.iter().map(|s| s.to_vec()).collect::<Vec<_>>(), app).unwrap()
    }

    const A: &[u8] = b"0123456789abcdef0123456789abcdef";
    const B: &[u8] = b"another secret that is long enough!!";

    #[test]
    fn sealed_value_opens_with_the_same_purpose() {
        let s = sealer(&[A]);
        let sealed = s.seal("session", b"hello");
        assert!(sealed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(sealed.len(), Sealer::sealed_len(5));
        assert_eq!(s.open("session", &sealed).as_deref(), Some(&b"hello"[..]));
        // Random nonce: sealing twice gives two different values.
        assert_ne!(sealed, s.seal("session", b"hello"));
        // Empty plaintext is fine too.
        assert_eq!(s.open("session", &s.seal("session", b"")), Some(vec![]));
    }

    #[test]
    fn sealed_len_matches_every_length() {
        let s = sealer(&[A]);
        for len in 0..10 {
            assert_eq!(s.seal("p", &vec![7; len]).len(), Sealer::sealed_len(len));
        }
    }

    #[test]
    fn value_sealed_for_one_purpose_does_not_open_as_another() {
        let s = sealer(&[A]);
        let state = s.seal("state", b"x");
        assert_eq!(s.open("session", &state), None);
        assert_eq!(s.open("", &state), None);
    }

    #[test]
    fn rotation_new_key_seals_old_key_still_opens() {
        let old = sealer(&[A]);
        let rotated = sealer(&[B, A]);
        let before = old.seal("session", b"old session");
        assert_eq!(
            rotated.open("session", &before).as_deref(),
            Some(&b"old session"[..])
        );
        let after = rotated.seal("session", b"new session");
        // Sealed with B: the old-only sealer cannot open it, a B-only sealer can.
        assert_eq!(old.open("session", &after), None);
        assert_eq!(
            sealer(&[B]).open("session", &after).as_deref(),
            Some(&b"new session"[..])
        );
        // Once A is removed, values sealed with it stop opening.
        assert_eq!(sealer(&[B]).open("session", &before), None);
    }

    #[test]
    fn key_id_collision_still_finds_the_right_key() {
        let mut s = sealer(&[B, A]);
        for key in &mut s.keys {
            key.id = 42;
        }
        let sealed = sealer(&[A]).seal("session", b"v");
        // Rewrite the key id in the blob to the colliding one: both keys are candidates.
        let mut blob = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        blob[1] = 42;
        let sealed = URL_SAFE_NO_PAD.encode(blob);
        assert_eq!(s.open("session", &sealed).as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn tampered_truncated_foreign_and_garbage_values_do_not_open() {
        let s = sealer(&[A]);
        let sealed = s.seal("session", b"some session payload");
        let blob = URL_SAFE_NO_PAD.decode(&sealed).unwrap();

        // Every single bit flip, anywhere in the blob, is refused.
        for i in 0..blob.len() {
            for bit in 0..8 {
                let mut tampered = blob.clone();
                tampered[i] ^= 1 << bit;
                assert_eq!(
                    s.open("session", &URL_SAFE_NO_PAD.encode(&tampered)),
                    None,
                    "byte {i}"
                );
            }
        }
        // Every truncation, of the blob and of the text.
        for len in 0..blob.len() {
            assert_eq!(
                s.open("session", &URL_SAFE_NO_PAD.encode(&blob[..len])),
                None
            );
        }
        for len in 0..sealed.len() {
            assert_eq!(s.open("session", &sealed[..len]), None);
        }
        // Appended bytes.
        let mut longer = blob.clone();
        longer.push(0);
        assert_eq!(s.open("session", &URL_SAFE_NO_PAD.encode(&longer)), None);
        // Foreign key.
        assert_eq!(sealer(&[B]).open("session", &sealed), None);
        // Garbage.
        for garbage in [
            "",
            "=",
            "!!!!",
            "AAAA",
            "a.b.c",
            "\u{0}",
            "é",
            &"A".repeat(300_000),
        ] {
            assert_eq!(s.open("session", garbage), None);
        }
        // Padded or standard-alphabet variants of the text are not ours.
        assert_eq!(s.open("session", &format!("{sealed}==")), None);
        // Another version byte.
        let mut other_version = blob.clone();
        other_version[0] = VERSION + 1;
        assert_eq!(
            s.open("session", &URL_SAFE_NO_PAD.encode(&other_version)),
            None
        );
    }

    #[test]
    fn a_value_sealed_for_one_application_does_not_open_at_another_with_the_same_secret() {
        let sealed = sealer(&[A]).seal("session", b"v");
        for other in [
            AppBinding { issuer: "https://auth.keysuite.app/application/o/other/", ..APP },
            AppBinding { client_id: "other-oidc", ..APP },
            AppBinding { public_url: "https://other.example.com", ..APP },
            // Length prefixes: moving a character from one value to the next is another binding.
            AppBinding { client_id: "app-oid", public_url: "chttps://app.example.com", ..APP },
        ] {
            assert_eq!(bound_sealer(&[A], other).open("session", &sealed), None, "{other:?}");
            assert_ne!(other.tag(), APP.tag());
        }
        assert_eq!(bound_sealer(&[A], APP).open("session", &sealed).as_deref(), Some(&b"v"[..]));
        assert_eq!(APP.tag().len(), 16);
    }

    #[test]
    fn values_of_the_unbound_format_do_not_open() {
        // Version 1 (keys not bound to the application): the version byte alone refuses it.
        let mut blob = URL_SAFE_NO_PAD.decode(sealer(&[A]).seal("session", b"v")).unwrap();
        blob[0] = 1;
        assert_eq!(sealer(&[A]).open("session", &URL_SAFE_NO_PAD.encode(blob)), None);
    }

    #[test]
    fn short_secrets_are_refused_by_position() {
        assert_eq!(Sealer::new(&[], APP).unwrap_err(), SealError::NoSecrets);
        let err = Sealer::new(&[A.to_vec(), b"short".to_vec()], APP).unwrap_err();
        assert_eq!(err, SealError::ShortSecretAt { index: 1, len: 5 });
        assert!(err.to_string().contains("#1"));
    }

    #[test]
    fn secrets_parse_from_every_base64_flavour() {
        let bytes: Vec<u8> = (0u8..32)
            .map(|b| b.wrapping_mul(37).wrapping_add(250))
            .collect();
        let std_pad = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let std_nopad = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes);
        let url_pad = base64::engine::general_purpose::URL_SAFE.encode(&bytes);
        let url_nopad = URL_SAFE_NO_PAD.encode(&bytes);
        assert_ne!(std_pad, url_pad, "the sample must exercise both alphabets");
        for text in [&std_pad, &std_nopad, &url_pad, &url_nopad] {
            assert_eq!(parse_secret(text).unwrap(), bytes, "{text}");
            assert_eq!(parse_secret(&format!(" {text}\n")).unwrap(), bytes);
        }
        assert_eq!(
            parse_secret("not base64 at all!"),
            Err(SealError::NotBase64)
        );
        assert_eq!(
            parse_secret("c2hvcnQ="),
            Err(SealError::TooShort { len: 5 })
        );
        let generated = generate_secret();
        assert_eq!(parse_secret(&generated).unwrap().len(), 32);
        assert_ne!(generated, generate_secret());
    }
}
