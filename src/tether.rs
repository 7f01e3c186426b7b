//! The line between an open connection and the session it was opened for.
//!
//! A websocket spliced to the app, or a response body still streaming from it, holds a
//! [`Tether`]; whoever learns that the session ended (a sign-out, a back-channel logout, a
//! refused refresh, …) holds a [`Cutter`] and cuts it with the [`EndReason`]. The connection
//! notices on its next poll, or at once when it is waiting: cutting wakes it.
//!
//! What a connection pays: one atomic load per poll of its body or splice, nothing per byte; the
//! cutter is a weak reference, so a connection that ends by itself frees the tether at once and
//! leaves its registry entry to be swept.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// Why an open connection was ended: the `reason` label of
/// `trousseau_proxy_connections_ended_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EndReason {
    /// The browser signed out (`/.trousseau/logout`).
    Logout = 1,
    /// Trousseau ended the session (back-channel logout by `sid` or `sub`).
    Backchannel = 2,
    /// Trousseau refused the refresh (user disabled, grant revoked) or the bearer token.
    Refused = 3,
    /// The refreshed claims no longer meet the route's rule or the organization policy.
    Policy = 4,
    /// `session.max_lifetime` was reached.
    Lifetime = 5,
    /// Trousseau stayed unreachable past `session.refresh_grace`: the identity cannot be vouched for.
    Unverified = 6,
}

impl EndReason {
    /// Every reason, in metric order.
    pub const ALL: [EndReason; 6] =
        [EndReason::Logout, EndReason::Backchannel, EndReason::Refused, EndReason::Policy, EndReason::Lifetime, EndReason::Unverified];

    /// The metric label and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::Backchannel => "backchannel",
            EndReason::Refused => "refused",
            EndReason::Policy => "policy",
            EndReason::Lifetime => "lifetime",
            EndReason::Unverified => "unverified",
        }
    }

    /// The reason a websocket's close frame carries (at most 123 bytes, RFC 6455 §5.5).
    pub fn close_text(self) -> &'static str {
        match self {
            EndReason::Logout => "session ended: signed out",
            EndReason::Backchannel => "session ended: signed out at Trousseau",
            EndReason::Refused => "session ended: Trousseau refused it",
            EndReason::Policy => "session ended: access no longer allowed",
            EndReason::Lifetime => "session ended: maximum lifetime reached",
            EndReason::Unverified => "session ended: Trousseau unreachable",
        }
    }

    /// The reason named by [`EndReason::as_str`].
    pub fn parse(word: &str) -> Option<EndReason> {
        EndReason::ALL.into_iter().find(|r| r.as_str() == word)
    }

    fn from_u8(value: u8) -> Option<EndReason> {
        EndReason::ALL.into_iter().find(|r| *r as u8 == value)
    }
}

struct Shared {
    /// 0 while the connection may go on; an [`EndReason`] once cut.
    reason: AtomicU8,
    /// The task serving the connection, woken by the cut.
    waker: AtomicWaker,
}

/// The connection's end: ask whether it was cut, or wait until it is. Clones share one state
/// (a request's extensions need `Clone`); one task waits on it.
#[derive(Clone)]
pub struct Tether {
    shared: Arc<Shared>,
}

/// The other end, kept by whoever may cut the connection. Does not keep the connection's state
/// alive.
#[derive(Clone)]
pub struct Cutter {
    shared: Weak<Shared>,
}

impl Default for Tether {
    fn default() -> Self {
        Tether::new()
    }
}

impl Tether {
    /// A tether not cut yet.
    pub fn new() -> Tether {
        Tether { shared: Arc::new(Shared { reason: AtomicU8::new(0), waker: AtomicWaker::new() }) }
    }

    /// A cutter for this tether.
    pub fn cutter(&self) -> Cutter {
        Cutter { shared: Arc::downgrade(&self.shared) }
    }

    /// Why it was cut, if it was.
    pub fn ended(&self) -> Option<EndReason> {
        EndReason::from_u8(self.shared.reason.load(Ordering::Acquire))
    }

    /// Ready with the reason once cut; otherwise the task is woken by the cut.
    pub fn poll_ended(&self, cx: &mut Context<'_>) -> Poll<EndReason> {
        if let Some(reason) = self.ended() {
            return Poll::Ready(reason);
        }
        self.shared.waker.register(cx.waker());
        // A cut between the first look and the registration woke nobody: look again.
        match self.ended() {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }

    /// Waits until the tether is cut.
    pub async fn cut(&self) -> EndReason {
        poll_fn(|cx| self.poll_ended(cx)).await
    }
}

impl Cutter {
    /// Cuts the tether: `true` if the connection was still open and this cut ended it (a
    /// connection is cut once; later cuts, and cuts of a connection already gone, are `false`).
    pub fn cut(&self, reason: EndReason) -> bool {
        let Some(shared) = self.shared.upgrade() else { return false };
        let cut = shared.reason.compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if cut {
            shared.waker.wake();
        }
        cut
    }

    /// Whether the connection is still open and not cut.
    pub fn is_open(&self) -> bool {
        self.shared.upgrade().is_some_and(|s| s.reason.load(Ordering::Acquire) == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cut_wakes_the_waiting_connection_once_with_its_reason() {
        let tether = Tether::new();
        let cutter = tether.cutter();
        assert!(cutter.is_open());
        assert_eq!(tether.ended(), None);
        let waiting = tokio::spawn(async move { tether.cut().await });
        tokio::task::yield_now().await;
        assert!(cutter.cut(EndReason::Backchannel));
        assert!(!cutter.cut(EndReason::Logout), "a connection ends once");
        assert_eq!(waiting.await.unwrap(), EndReason::Backchannel);
        assert!(!cutter.is_open());
    }

    #[test]
    fn a_connection_gone_cannot_be_cut() {
        let cutter = Tether::new().cutter();
        assert!(!cutter.is_open());
        assert!(!cutter.cut(EndReason::Lifetime));
    }

    #[test]
    fn reasons_read_back_from_their_words_and_fit_a_close_frame() {
        for reason in EndReason::ALL {
            assert_eq!(EndReason::parse(reason.as_str()), Some(reason));
            assert!(reason.close_text().len() <= 123);
        }
        assert_eq!(EndReason::parse("other"), None);
    }
}
