//! The sign-in trail: a small cookie the callback sets after each completed sign-in, so that a
//! browser which keeps signing in without its session sticking is shown why, instead of being
//! sent round again — the redirect loop that misconfigurations produce (replicas with different
//! secrets or each with its own memory store, a front end dropping large cookies).
//!
//! The value is not secret and not sealed: it holds times, a size and two fingerprints, and must
//! stay readable by a replica whose secret differs (that is one of the causes it names). A forged
//! or damaged value is no trail; the worst a forged one can do is show its own browser the
//! diagnosis page, which offers to sign in anyway.

/// Completed sign-ins are counted over this many seconds.
pub const WINDOW_SECS: u64 = 60;

/// This many completed sign-ins within [`WINDOW_SECS`], and a navigation still without a session,
/// is a loop: the third sign-in is not started.
pub const LOOP_AFTER: usize = 2;

/// The trail keeps the times of the last few sign-ins only.
const MAX_TIMES: usize = 3;

/// Format version, the value's first field.
const VERSION: &str = "1";

/// What the trail cookie records about this browser's recent sign-ins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignInTrail {
    /// Fingerprint of the sealing key of the replica that completed the last sign-in
    /// ([`crate::session::seal::Sealer::fingerprint`]).
    pub key: u32,
    /// The replica that completed it: a random number each proxy instance draws at start
    /// ([`crate::session::sessions::Sessions`]), so a restart counts as another replica.
    pub replica: u32,
    /// Bytes of the session cookies it set (`name=value`, every chunk).
    pub cookie_bytes: u32,
    /// When the recent sign-ins completed (unix seconds), oldest first, at most three.
    pub times: Vec<u64>,
}

impl SignInTrail {
    /// Reads a trail cookie value: `1.<key hex>.<replica hex>.<bytes>.<time>[.<time>…]`. Anything
    /// else — another version, a field out of range, more than three times — is `None`.
    pub fn parse(value: &str) -> Option<SignInTrail> {
        if value.len() > 96 {
            return None;
        }
        let mut fields = value.split('.');
        if fields.next()? != VERSION {
            return None;
        }
        let hex = |f: &str| (f.len() == 8 && f.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u32::from_str_radix(f, 16).ok()).flatten();
        let decimal = |f: &str| (!f.is_empty() && f.len() <= 10 && f.bytes().all(|b| b.is_ascii_digit())).then(|| f.parse::<u64>().ok()).flatten();
        let key = hex(fields.next()?)?;
        let replica = hex(fields.next()?)?;
        let cookie_bytes = u32::try_from(decimal(fields.next()?)?).ok()?;
        let times = fields.map(decimal).collect::<Option<Vec<u64>>>()?;
        if times.is_empty() || times.len() > MAX_TIMES || times.windows(2).any(|w| w[0] > w[1]) {
            return None;
        }
        Some(SignInTrail { key, replica, cookie_bytes, times })
    }

    /// The cookie value [`SignInTrail::parse`] reads back.
    pub fn encode(&self) -> String {
        let mut value = format!("{VERSION}.{:08x}.{:08x}.{}", self.key, self.replica, self.cookie_bytes);
        for t in &self.times {
            value.push('.');
            value.push_str(&t.to_string());
        }
        value
    }

    /// The trail after one more sign-in completed at `now` by `replica`: the times of the window
    /// kept (at most three, the newest), the rest replaced.
    pub fn after_sign_in(previous: Option<SignInTrail>, key: u32, replica: u32, cookie_bytes: u32, now: u64) -> SignInTrail {
        let mut times: Vec<u64> = previous.map(|t| t.times).unwrap_or_default().into_iter().filter(|&t| in_window(t, now)).collect();
        times.push(now);
        // A replica with a clock a little ahead may have written a later time: keep them ordered.
        times.sort_unstable();
        let excess = times.len().saturating_sub(MAX_TIMES);
        times.drain(..excess);
        SignInTrail { key, replica, cookie_bytes, times }
    }

    /// How many sign-ins completed within the last [`WINDOW_SECS`] at `now`.
    pub fn recent(&self, now: u64) -> usize {
        self.times.iter().filter(|&&t| in_window(t, now)).count()
    }
}

/// Within the window before `now` (a few seconds ahead allowed: replicas' clocks differ).
fn in_window(t: u64, now: u64) -> bool {
    t.saturating_add(WINDOW_SECS) >= now && t <= now.saturating_add(5)
}

/// Why a request that came after a completed sign-in has no session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionTrouble {
    /// The browser sent no session cookie at all.
    NoCookie,
    /// A session cookie came, but this replica cannot open it (another secret, or damaged).
    Unreadable,
    /// The cookie holds a handle this replica's store does not know.
    UnknownHandle,
    /// The session opens and was not revoked, yet is refused at once: its times do not fit (a
    /// clock off by more than a minute between the replica that signed in and this one).
    Ended,
}

/// What the diagnosis page is built from.
#[derive(Clone, Debug)]
pub struct LoopFacts {
    /// What the trail says about the last sign-in.
    pub trail: SignInTrail,
    /// How many sign-ins completed within the last minute.
    pub recent: usize,
    /// What is wrong with this request's session.
    pub trouble: SessionTrouble,
    /// The last sign-in was sealed with another key than this replica's.
    pub other_secret: bool,
    /// The last sign-in was completed by another replica (or before a restart).
    pub other_replica: bool,
    /// Sessions live in a server-side store (`memory` or `redis`).
    pub server_side: bool,
    /// The store is `redis` (shared by the replicas).
    pub shared_store: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trail_round_trips_and_keeps_the_last_three_sign_ins_of_the_window() {
        let mut trail = SignInTrail::after_sign_in(None, 0xdead_beef, 7, 3_812, 1_000);
        assert_eq!(SignInTrail::parse(&trail.encode()), Some(trail.clone()));
        for now in [1_010, 1_020, 1_030] {
            trail = SignInTrail::after_sign_in(Some(trail), 0xdead_beef, 7, 3_812, now);
        }
        assert_eq!(trail.times, vec![1_010, 1_020, 1_030]);
        assert_eq!(trail.recent(1_030), 3);
        assert_eq!(trail.recent(1_085), 1, "only the sign-ins of the last minute count");
        let later = SignInTrail::after_sign_in(Some(trail), 0xdead_beef, 7, 3_812, 2_000);
        assert_eq!(later.times, vec![2_000], "an old trail starts over");
        assert_eq!(SignInTrail::parse(&later.encode()), Some(later));
    }

    #[test]
    fn anything_but_a_well_formed_trail_is_no_trail() {
        for bad in [
            "",
            "1",
            "2.deadbeef.00000001.10.5",
            "1.deadbee.00000001.10.5",
            "1.deadbeeg.00000001.10.5",
            "1.deadbeef.00000001.10",
            "1.deadbeef.00000001.10.",
            "1.deadbeef.00000001.-1.5",
            "1.deadbeef.00000001.10.+5",
            "1.+eadbeef.00000001.10.5",
            "1.deadbeef.00000001.10.6.5",
            "1.deadbeef.00000001.10.1.2.3.4",
            "1.deadbeef.00000001.99999999999.5",
            "1.deadbeef.00000001.10.99999999999",
        ] {
            assert_eq!(SignInTrail::parse(bad), None, "{bad:?}");
        }
        assert!(SignInTrail::parse("1.DEADBEEF.00000001.10.5.6").is_some(), "hex in either case");
    }
}
