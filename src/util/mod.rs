//! Small helpers every other module may use, with no dependency on any module of ours: the
//! wall clock, random ids, SHA-256, a constant-time comparison, and the latency histogram. One
//! copy of each.

pub mod clock;
pub mod hash;
pub mod histogram;
pub mod id;

/// The hasher of the in-memory maps every request looks up (the revocation sets, the minted
/// assertions), instead of std's SipHash, which hashing their string keys three or four times a
/// request made ~2% of a proxied request's instructions. Keyed per process at random; their keys
/// are not chosen by clients (session ids we mint, `sid`s and `sub`s from signed tokens).
pub type FastHash = foldhash::fast::RandomState;

/// Whether `a` and `b` are equal, in time that depends only on their lengths: for secrets and
/// values an attacker tries to guess (state, client secret, PKCE verifier).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// An error with its causes, `: `-separated: hyper's own messages ("client error (Connect)") say
/// little alone, the causes ("Connection refused") say what to fix.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How many worker threads serve the main listener ([`crate::server`]): one per core the
/// process may use. The upstream pools ([`crate::proxy`]) are sized by the same count, so every
/// worker has its own.
pub fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"abcd"));
    }
}
