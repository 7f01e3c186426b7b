//! A response body tied to its session: [`tether`] wraps the app's body so that a cut ends it —
//! an error from the body, which hyper turns into a closed connection (HTTP/1.1) or a reset
//! stream (HTTP/2), and which drops the app's connection, so both ends see it end.
//!
//! The body is tracked in [`OpenConnections`] only once it proves long: at its second frame, or
//! the first time it waits for the app. A page or an API answer that arrives in one read is
//! never tracked, and costs no tether. Per poll a tracked body pays one atomic load; waiting,
//! it registers its waker with the tether.

use std::error::Error;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use super::{Kind, OpenConnections, Opened};
use crate::body::{Body, BoxError};
use crate::tether::{EndReason, Tether};

/// The error a cut body ends with.
#[derive(Debug)]
pub struct SessionEnded(pub EndReason);

impl fmt::Display for SessionEnded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the session ended ({})", self.0.as_str())
    }
}

impl Error for SessionEnded {}

struct Tethered {
    inner: Body,
    /// Made when the body is tracked: a short answer costs no tether.
    tether: Option<Tether>,
    /// Data frames so far, up to 2.
    frames: u8,
    /// Until tracked: where, and as what.
    untracked: Option<(Arc<OpenConnections>, Opened)>,
}

/// `body`, ended when its session ends. An empty body is returned as it is.
pub fn tether(body: Body, registry: &Arc<OpenConnections>, opened: Opened) -> Body {
    if http_body::Body::is_end_stream(&body) || !registry.enabled() {
        return body;
    }
    Tethered { inner: body, tether: None, frames: 0, untracked: Some((registry.clone(), opened)) }.boxed_unsync()
}

impl Tethered {
    fn track(&mut self) -> &Tether {
        if let Some((registry, opened)) = self.untracked.take() {
            let tether = Tether::new();
            registry.track(opened, Kind::Stream, tether.cutter());
            self.tether = Some(tether);
        }
        self.tether.get_or_insert_with(Tether::new)
    }
}

impl http_body::Body for Tethered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(reason) = this.tether.as_ref().and_then(Tether::ended) {
            return Poll::Ready(Some(Err(SessionEnded(reason).into())));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {
                if let Poll::Ready(reason) = this.track().poll_ended(cx) {
                    return Poll::Ready(Some(Err(SessionEnded(reason).into())));
                }
            }
            Poll::Ready(Some(Ok(frame))) if frame.is_data() && this.frames < 2 => {
                this.frames += 1;
                if this.frames == 2 {
                    this.track();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Target;
    use http::{HeaderValue, Method, Uri};
    use http_body_util::StreamBody;

    fn opened(id: &str) -> Opened {
        Opened {
            session: Arc::new(crate::session::sample(id, "alice")),
            bearer: None,
            method: Method::GET,
            uri: Uri::from_static("/events"),
            request_id: HeaderValue::from_static("r"),
        }
    }

    #[tokio::test]
    async fn a_one_read_answer_is_never_tracked() {
        let registry = Arc::new(OpenConnections::new(true, None, String::new()));
        let mut body = tether(crate::body::full("hello"), &registry, opened("s"));
        while body.frame().await.is_some() {}
        registry.sweep(0, |_| u64::MAX, |_, _| false);
        assert_eq!(registry.open(), 0);
    }

    #[tokio::test]
    async fn a_waiting_stream_is_tracked_and_a_cut_ends_it_with_an_error() {
        let registry = Arc::new(OpenConnections::new(true, None, String::new()));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let inner = StreamBody::new(tokio_stream_of(rx)).boxed_unsync();
        let mut body = tether(inner, &registry, opened("s"));
        tx.send(Ok(Frame::data(Bytes::from_static(b"data: 1\n\n")))).await.unwrap();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        let reading = tokio::spawn(async move { body.frame().await.map(|f| f.map(|_| ())) });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        registry.sweep(0, |_| u64::MAX, |_, _| false);
        assert_eq!(registry.open(), 1, "tracked once it waited for the app");
        assert_eq!(registry.end_here(&Target::Session("s".into()), EndReason::Logout), 1);
        let error = reading.await.unwrap().expect("an error, not the end").unwrap_err();
        assert_eq!(error.downcast_ref::<SessionEnded>().map(|e| e.0), Some(EndReason::Logout));
        drop(tx);
    }

    fn tokio_stream_of<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> + Send {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
