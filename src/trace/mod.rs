//! W3C Trace Context: every request belongs to a trace, whether or not anything is exported.
//!
//! A valid incoming `traceparent` is continued (its trace id kept, its span the parent of ours);
//! anything else — absent, malformed, upper-case hex, an all-zero id, version `ff` — starts a new
//! trace, and then the caller's `tracestate` goes too (the specification ties it to a valid
//! `traceparent`). The app receives `traceparent` with the proxy's span as parent, and the
//! caller's `tracestate` unchanged; each call to Trousseau made for the request carries the span
//! of the work it serves — the request's, or its refresh's ([`outgoing`]). The trace id is in the
//! request's access line.
//!
//! A new trace is sampled (flag `01`) with the probability `telemetry.sampling_ratio` (default
//! 1.0, as OpenTelemetry's default sampler); a continued one keeps its caller's decision.
//!
//! Ids need to be unique and unpredictable enough for sampling, not secret: a per-thread
//! generator seeded from the system's randomness makes them (two multiplications per id, where
//! drawing from the system per request cost about 2% of a proxied request for the request id).

pub mod otlp;
pub mod record;

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The W3C `traceparent` header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The W3C `tracestate` header.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest `tracestate` passed on (the specification's 32 members of 256 bytes would be
/// 8 KB; vendors keep it short, and the limit keeps a client from growing every request).
const MAX_TRACESTATE: usize = 512;

/// One span of a trace, as `traceparent` carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace's id.
    pub trace_id: [u8; 16],
    /// The span's id.
    pub span_id: [u8; 8],
    /// Whether the trace is sampled (flag `01`).
    pub sampled: bool,
}

impl TraceParent {
    /// A new trace, its root span.
    pub fn new_root(sampled: bool) -> TraceParent {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&nonzero_u64().to_be_bytes());
        trace_id[8..].copy_from_slice(&nonzero_u64().to_be_bytes());
        TraceParent { trace_id, span_id: nonzero_u64().to_be_bytes(), sampled }
    }

    /// A new span of the same trace.
    pub fn child(&self) -> TraceParent {
        TraceParent { span_id: nonzero_u64().to_be_bytes(), ..*self }
    }

    /// Reads a `traceparent` value: `00-<32 hex>-<16 hex>-<2 hex>`, lower-case, ids not all
    /// zero. A later version is read by its first four fields (as the specification asks); `ff`
    /// is invalid.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() < 55 || (value.len() > 55 && value[55] != b'-') {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        if version == 0xff || (version == 0 && value.len() != 55) {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, byte) in trace_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, byte) in span_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// The `traceparent` value (version 00).
    pub fn header(&self) -> HeaderValue {
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        hex_into(&self.trace_id, &mut text[3..35]);
        text[35] = b'-';
        hex_into(&self.span_id, &mut text[36..52]);
        text[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        HeaderValue::from_bytes(&text).expect("ASCII hex")
    }

    /// The trace id in hex, as logs show it.
    pub fn trace_id_hex(&self) -> TraceIdText {
        let mut text = [0u8; 32];
        hex_into(&self.trace_id, &mut text);
        TraceIdText(text)
    }
}

/// A trace id in lower-case hex, without an allocation.
#[derive(Clone, Copy)]
pub struct TraceIdText([u8; 32]);

impl TraceIdText {
    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII hex")
    }
}

/// A request's place in its trace.
#[derive(Clone, Debug)]
pub struct RequestTrace {
    /// The proxy's span for the request: the parent of what the proxy calls.
    pub span: TraceParent,
    /// The caller's span, when the trace was continued.
    pub parent: Option<[u8; 8]>,
    /// The caller's `tracestate`, passed on unchanged (only with a valid `traceparent`).
    pub state: Option<HeaderValue>,
    /// Its spans, when they are exported ([`record`]): a sampled trace with
    /// `telemetry.otlp_endpoint` set.
    pub recording: Option<Arc<record::Recording>>,
}

impl RequestTrace {
    /// From the request's headers: continued when its `traceparent` is valid, else a new trace,
    /// sampled with the probability `sampling_ratio`.
    pub fn from_headers(headers: &HeaderMap, sampling_ratio: f64) -> RequestTrace {
        let incoming = match headers.get_all(&TRACEPARENT).iter().collect::<Vec<_>>().as_slice() {
            // Two `traceparent`s are no valid one.
            [one] => TraceParent::parse(one.as_bytes()),
            _ => None,
        };
        match incoming {
            Some(caller) => {
                let state = headers.get(&TRACESTATE).filter(|s| s.len() <= MAX_TRACESTATE && headers.get_all(&TRACESTATE).iter().count() == 1).cloned();
                RequestTrace { span: caller.child(), parent: Some(caller.span_id), state, recording: None }
            }
            None => RequestTrace::start(sampling_ratio),
        }
    }

    /// A new trace, whatever the request says (`telemetry.trust_incoming: false`), sampled with
    /// the probability `sampling_ratio`.
    pub fn start(sampling_ratio: f64) -> RequestTrace {
        RequestTrace { span: TraceParent::new_root(sample(sampling_ratio)), parent: None, state: None, recording: None }
    }

    /// Notes how the route was judged, when the request is recorded ([`record::Recording::note_route`]).
    pub fn note_route(&self, route: &'static str) {
        if let Some(r) = &self.recording {
            r.note_route(route);
        }
    }

    /// Notes what became of the session, when the request is recorded ([`record::Recording::note_session`]).
    pub fn note_session(&self, session: &'static str) {
        if let Some(r) = &self.recording {
            r.note_session(session);
        }
    }

    /// A child span of the request's own, timed from now, when the request is recorded.
    pub fn child(&self, name: &'static str, kind: record::SpanKind) -> Option<record::ChildSpan> {
        self.recording.as_ref().map(|r| r.child(name, kind, None))
    }

    /// The span of work done for the request that may call Trousseau: the recorded child when
    /// there is one, else a new span id of the trace, so the calls' parent is never the request's
    /// own span twice over.
    pub fn span_of(&self, child: Option<&record::ChildSpan>) -> TraceParent {
        child.map_or_else(|| self.span.child(), record::ChildSpan::span)
    }

    /// Sets the outgoing request's trace headers: `traceparent` with the proxy's span as parent,
    /// the caller's `tracestate` or none.
    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT, self.span.header());
        match &self.state {
            Some(state) => {
                headers.insert(TRACESTATE, state.clone());
            }
            None => {
                headers.remove(TRACESTATE);
            }
        }
    }
}

tokio::task_local! {
    static CURRENT: TraceParent;
}

/// Runs `work` as part of `span`'s trace: the calls it makes to Trousseau carry it ([`outgoing`]).
/// Only around the parts of a request that may call Trousseau (the reserved endpoints, a due
/// refresh, a bearer token's check, organizations fetched back): the scope swaps a thread-local in
/// and out at every poll, which a plain proxied request need not pay. (Not an `async fn`: that
/// would hold `work` twice.)
pub fn within<F: Future>(span: TraceParent, work: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(span, work)
}

/// The `traceparent` of a call made now: the span in force ([`within`]) as the call's parent — the
/// request's span, or the span of the work it is part of (a refresh, a token check), which an
/// exporter records, so Trousseau's spans hang from one of ours —, or a new trace outside a
/// request (background refreshes, discovery).
pub fn outgoing() -> HeaderValue {
    CURRENT.try_with(|span| *span).unwrap_or_else(|_| TraceParent::new_root(true)).header()
}

/// Whether a new trace is sampled, with probability `ratio`.
fn sample(ratio: f64) -> bool {
    if ratio >= 1.0 || ratio <= 0.0 {
        return ratio >= 1.0;
    }
    let uniform = (next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    uniform < ratio
}

thread_local! {
    /// wyrand's state, seeded from the system once per thread.
    static STATE: Cell<u64> = Cell::new(u64::from_ne_bytes(crate::util::id::random_bytes::<8>()));
}

/// wyrand (Wang Yi's generator): a 64-bit state, one multiplication per value.
fn next_u64() -> u64 {
    STATE.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A random `u64` that is not zero (an all-zero id is invalid).
fn nonzero_u64() -> u64 {
    loop {
        let v = next_u64();
        if v != 0 {
            return v;
        }
    }
}

/// Two lower-case hex digits (the specification refuses upper case).
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read_and_written_back_the_same() {
        let parsed = TraceParent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(parsed.trace_id_hex().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(parsed.sampled);
        assert_eq!(parsed.header(), VALID);
        // A later version: its first four fields, more after a dash.
        assert!(TraceParent::parse(format!("cc{}-what-the-future-holds", &VALID[2..]).as_bytes()).is_some());
    }

    #[test]
    fn anything_else_is_no_traceparent() {
        let bad = [
            "",
            &VALID[..54],
            &format!("{VALID}-"),                                             // version 00 is exactly 55
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",         // version ff
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",         // upper case
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",         // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",         // zero span id
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",        // later version, no dash
        ];
        for value in bad {
            assert_eq!(TraceParent::parse(value.as_bytes()), None, "{value:?}");
        }
    }

    #[test]
    fn a_request_continues_a_valid_trace_or_starts_a_new_one_without_the_callers_state() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        headers.insert(TRACESTATE, HeaderValue::from_static("vendor=abc"));
        let continued = RequestTrace::from_headers(&headers, 0.0);
        assert_eq!(continued.span.trace_id_hex().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(continued.parent, Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]));
        assert_ne!(continued.span.span_id, continued.parent.unwrap(), "our own span");
        assert!(continued.span.sampled, "the caller's decision, whatever our ratio");
        let mut out = HeaderMap::new();
        continued.write(&mut out);
        assert_eq!(&out[&TRACESTATE], "vendor=abc");
        assert!(out[&TRACEPARENT].to_str().unwrap().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));

        headers.insert(TRACEPARENT, HeaderValue::from_static("00-garbage"));
        let fresh = RequestTrace::from_headers(&headers, 1.0);
        assert_eq!(fresh.parent, None);
        assert!(fresh.state.is_none() && fresh.span.sampled);
        let mut out = headers.clone();
        fresh.write(&mut out);
        assert!(!out.contains_key(&TRACESTATE), "a tracestate without a valid traceparent goes");
        assert_eq!(TraceParent::parse(out[&TRACEPARENT].as_bytes()), Some(fresh.span));
        assert!(!RequestTrace::from_headers(&HeaderMap::new(), 0.0).span.sampled);
        // Not trusted: a trace of its own, the caller's state dropped when written.
        let own = RequestTrace::start(1.0);
        assert!(own.parent.is_none() && own.state.is_none() && own.span.trace_id != continued.span.trace_id);
    }

    #[test]
    fn new_ids_differ_and_sampling_follows_the_ratio() {
        let ids: std::collections::HashSet<[u8; 16]> = (0..10_000).map(|_| TraceParent::new_root(true).trace_id).collect();
        assert_eq!(ids.len(), 10_000);
        let sampled = (0..100_000).filter(|_| sample(0.25)).count();
        assert!((23_500..26_500).contains(&sampled), "{sampled} of 100,000 at 0.25");
    }

    #[tokio::test]
    async fn calls_made_for_a_request_hang_from_the_span_in_force() {
        let span = TraceParent::new_root(true);
        let header = within(span, async { outgoing() }).await;
        assert_eq!(TraceParent::parse(header.as_bytes()), Some(span));
        let outside = TraceParent::parse(outgoing().as_bytes()).unwrap();
        assert_ne!(outside.trace_id, span.trace_id, "outside a request: a new trace");
    }
}
