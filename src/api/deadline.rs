//! A request body with a deadline: a client that sends a request head and then trickles
//! (or never sends) its body cannot hold a connection and a handler for longer than
//! `api.body_timeout_ms`. The handler reading the body gets an error that
//! [`is_expired`] recognises and answers `408`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};

/// The error a body past its deadline yields.
#[derive(Debug)]
pub struct Expired(Duration);

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} ms (api.body_timeout_ms)",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for Expired {}

/// `body`, failing once `limit` has passed from now.
pub struct DeadlineBody {
    inner: Body,
    limit: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    pub fn new(inner: Body, limit: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            let limit = self.limit;
            return Poll::Ready(Some(Err(axum::Error::new(Expired(limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error` (a body rejection, anywhere in its source chain) is an [`Expired`].
pub fn is_expired(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<Expired>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn a_stalled_body_fails_at_its_deadline() {
        let (_sender, stalled) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, axum::Error>>(1);
        let stream = tokio_stream_of(stalled);
        let body = DeadlineBody::new(Body::from_stream(stream), Duration::from_millis(50));
        let error = body.collect().await.expect_err("the deadline passes");
        assert!(is_expired(&error), "{error}");
        assert!(error.to_string().contains("50 ms"), "{error}");
    }

    #[tokio::test]
    async fn a_prompt_body_is_read_whole() {
        let body = DeadlineBody::new(Body::from("{\"id\":1}"), Duration::from_secs(10));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"{\"id\":1}");
    }

    /// A stream of the frames `receiver` yields (none, while its sender is alive).
    fn tokio_stream_of(
        mut receiver: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, axum::Error>>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, axum::Error>> {
        futures_util::stream::poll_fn(move |cx| {
            receiver
                .poll_recv(cx)
                .map(|frame| frame.map(|frame| frame.map(|f| f.into_data().unwrap_or_default())))
        })
    }
}
