//! After the answer: the websockets and streams the request path opened for a session
//! ([`crate::live`]) are watched until they close — one task per proxy, beside the workers.
//!
//! - **Once a second** ([`SWEEP_EVERY`]) the registry forgets closed connections, ends those past
//!   `session.max_lifetime`, and hands over the sessions whose access token is due.
//! - **A due session is refreshed in the background**, single-flight as for requests (and across
//!   replicas through Redis), so a tab with only a websocket open is not cut when its 5-minute token
//!   expires. The refreshed session is kept where the browser will find it
//!   ([`crate::session::sessions::Sessions::keep_refreshed`]) and its connections go on with it —
//!   those whose rule the new claims no longer meet end (`policy`). Trousseau refusing the refresh
//!   ends them (`refused`); Trousseau unreachable past `session.refresh_grace` too (`unverified`).
//!   An API client's bearer token is checked with Trousseau again when its check expires.
//! - **With Redis**, every replica listens on the channel where the others publish the sessions
//!   that ended ([`crate::live::OpenConnections::end`]); each time it (re)subscribes it checks its
//!   tracked sessions against the revocations, so nothing published while it was cut off is missed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::app::{App, Current};
use crate::bearer::BearerOutcome;
use crate::live::{Due, Target};
use crate::session::refresh::RefreshOutcome;
use crate::session::Session;
use crate::tether::EndReason;
use crate::util::clock::now_secs;

/// How often the registry is swept: the bound on ending a connection at `max_lifetime`, and the
/// delay of a background refresh past the moment it is due.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Wait before subscribing again after the Redis subscription failed or ended.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Watches the open connections until dropped (aborted), with the app in force at each look (the
/// registry is the same across reloads). Does nothing when `session.end_open_connections` is off.
pub async fn watch(current: Arc<Current>) {
    if !current.get().live.enabled() {
        return;
    }
    if current.get().live.channel().is_some() {
        tokio::spawn(listen(Arc::clone(&current)));
    }
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let app = current.get();
        let due = app.live.sweep(now_secs(), |s| app.sessions.deadline(s), |s, bearer| is_due(&app, s, bearer));
        for due in due {
            tokio::spawn(check(Arc::clone(&app), due));
        }
    }
}

/// A session's token is due for a check: its access token (cookie sessions), or the bearer
/// token's last check with Trousseau.
fn is_due(app: &App, session: &Session, bearer: bool) -> bool {
    if bearer {
        return session.expires_at <= now_secs();
    }
    app.refresher.is_due(session)
}

/// The background check of one session's open connections.
async fn check(app: Arc<App>, due: Due) {
    let id = due.session.id.clone();
    let verdict = match &due.bearer {
        Some(token) => check_bearer(&app, &due.session, token).await,
        None => refresh(&app, due.session.clone()).await,
    };
    match verdict {
        Verdict::GoOn(Some(session)) => app.live.refreshed(&session, &app.policy),
        Verdict::GoOn(None) => app.live.checked(&id),
        Verdict::End(reason) => {
            app.live.end(Target::Session(id), reason).await;
        }
    }
}

/// What a background check decided.
enum Verdict {
    /// The connections go on (with this newer session, if there is one).
    GoOn(Option<Arc<Session>>),
    /// They end.
    End(EndReason),
}

async fn refresh(app: &App, session: Arc<Session>) -> Verdict {
    // The browser may have refreshed it meanwhile (its cookie, or the copy kept for it).
    let session = app.sessions.newer_copy(&session).await.unwrap_or(session);
    let expires_at = session.expires_at;
    let sub = session.identity.sub.clone();
    // A trace of its own (no request carries it), sampled as the proxy's new traces are: the
    // audit line and Trousseau's call share it.
    let span = crate::trace::RequestTrace::start(app.settings.telemetry.sampling_ratio).span;
    match crate::trace::within(span, app.refresher.refresh_if_due(session)).await {
        RefreshOutcome::Fresh(session) => Verdict::GoOn(Some(session)),
        RefreshOutcome::Stale(_) => Verdict::GoOn(None),
        RefreshOutcome::Refreshed(session) => {
            let session = super::refresh::settled(app, session);
            if let Err(e) = app.sessions.keep_refreshed(&session).await {
                // The connections go on; the browser's next request finds the token spent and
                // signs in again, or (Redis back) finds this copy.
                tracing::warn!(sub = %session.identity.sub, error = %e, "could not keep the session refreshed for its open connections");
            }
            Verdict::GoOn(Some(session))
        }
        RefreshOutcome::Ended(ending) => {
            if ending == crate::session::refresh::Ending::Refused {
                // Refused while only open connections held the session: no request to carry the
                // audit line, so it names none.
                crate::audit::record(&crate::audit::Record {
                    sub: Some(&sub),
                    request_id: "-",
                    trace_id: span.trace_id_hex().as_str(),
                    event: crate::audit::Event::RefreshRefused { error: "invalid_grant" },
                });
            }
            Verdict::End(EndReason::Refused)
        }
        RefreshOutcome::Unavailable => Verdict::End(EndReason::Unverified),
        RefreshOutcome::StoreUnavailable(_) if now_secs() >= expires_at.saturating_add(app.settings.session.refresh_grace.as_secs()) => {
            Verdict::End(EndReason::Unverified)
        }
        RefreshOutcome::StoreUnavailable(_) => Verdict::GoOn(None),
    }
}

async fn check_bearer(app: &App, session: &Session, token: &http::HeaderValue) -> Verdict {
    let Some(bearer) = app.bearer.as_ref() else { return Verdict::GoOn(None) };
    let Some(token) = crate::bearer::BearerAuth::token(token) else { return Verdict::End(EndReason::Refused) };
    let past_grace = now_secs() >= session.expires_at.saturating_add(app.settings.session.refresh_grace.as_secs());
    match bearer.recheck(token).await {
        BearerOutcome::Valid(mut checked) => match app.sessions.revocations().is_revoked(&checked).await {
            Ok(true) => Verdict::End(EndReason::Backchannel),
            Ok(false) => {
                checked.org = app.policy.auto_select(&checked);
                Verdict::GoOn(Some(Arc::new(*checked)))
            }
            Err(_) if past_grace => Verdict::End(EndReason::Unverified),
            Err(_) => Verdict::GoOn(None),
        },
        BearerOutcome::Invalid => Verdict::End(EndReason::Refused),
        BearerOutcome::Unavailable | BearerOutcome::Throttled(_) if past_grace => Verdict::End(EndReason::Unverified),
        BearerOutcome::Unavailable | BearerOutcome::Throttled(_) => Verdict::GoOn(None),
    }
}

/// Listens for the ends the other replicas publish, for as long as the proxy runs.
async fn listen(current: Arc<Current>) {
    let Some((redis, channel)) = current.get().live.channel().map(|(redis, channel)| (Arc::clone(redis), channel.to_string())) else { return };
    loop {
        match redis.subscribe(&channel).await {
            Ok(mut subscription) => {
                tracing::debug!("listening for sessions ended on the other replicas");
                resync(&current.get()).await;
                let mut messages = subscription.on_message();
                while let Some(message) = messages.next().await {
                    let Ok(text) = message.get_payload::<String>() else { continue };
                    match Target::parse(&text) {
                        Some((target, reason)) => {
                            current.get().live.end_here(&target, reason);
                        }
                        None => tracing::debug!("unreadable message on the sessions-ended channel: ignored"),
                    }
                }
                tracing::debug!("the subscription to sessions ended on the other replicas was lost: subscribing again");
            }
            Err(e) => tracing::debug!(error = %e, "cannot listen for sessions ended on the other replicas yet"),
        }
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

/// Checks every tracked session against the store and the revocations: what was published while
/// this replica was not listening.
async fn resync(app: &App) {
    for (session, bearer) in app.live.sessions() {
        let ended = match bearer {
            true => app.sessions.revocations().is_revoked_uncached(&session).await.map(|r| r.then_some(EndReason::Backchannel)),
            false => app.sessions.ended_elsewhere(&session).await,
        };
        if let Ok(Some(reason)) = ended {
            app.live.end_here(&Target::Session(session.id.clone()), reason);
        }
    }
}
