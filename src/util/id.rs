//! Random identifiers from the system RNG (aws-lc-rs), base64url without padding.
//!
//! aws-lc's RNG fails only when the operating system gives no entropy at all; an id made then
//! would be guessable, so the process stops rather than hand one out.

use base64::Engine as _;

/// `bytes` random bytes, base64url without padding: codes, tokens, states.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).expect("system randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// 128 random bits, base64url: session ids, lock owners, `state` of an end-session redirect.
pub fn random_id() -> String {
    random_token(16)
}

/// `N` random bytes, for keys and per-process prefixes.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_base64url_of_the_asked_length_and_differ() {
        let (a, b) = (super::random_id(), super::random_id());
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(super::random_token(32).len(), 43);
    }
}
