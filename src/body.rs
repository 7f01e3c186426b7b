//! The one body type every response of the proxy uses.
//!
//! Proxied responses stream the upstream's body through untouched; answers we make ourselves (pages,
//! JSON, redirects) are small and in memory. Both are boxed into [`Body`] so every code path returns
//! the same `Response<Body>`.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

/// Error type carried by streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body of everything the proxy answers.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes` in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any streaming body whose error converts into [`BoxError`] (hyper's `Incoming`, for one).
pub fn stream<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}
