//! The minimum pace of a request body (SPEC §8): after the header timeout, a body must keep
//! coming at [`MIN_BODY_RATE`] bytes per second, or it is cut off — on HTTP/1 by `Strict` (the
//! connection closes), on HTTP/2 by [`PacedBody`] (the stream fails, and with it the request).
//! Otherwise a client could hold a request, its buffers and its upstream connection open forever
//! by sending one byte a minute.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::BodyTooSlow;
use crate::upstream::BoxError;

/// The slowest a request body may arrive, in bytes per second (as Apache's `mod_reqtimeout`
/// `MinRate`): the time a body may spend waiting for the client is the header timeout plus one
/// second per this many bytes received.
pub(super) const MIN_BODY_RATE: u64 = 500;

/// How long the current request body has kept keyswap waiting for the client. Time the body
/// spends waiting on the upstream (hyper not reading) does not count.
#[derive(Default)]
pub(super) struct Pace {
    waited: Duration,
    since: Option<Instant>,
    pub(super) bytes: u64,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Pace {
    pub(super) fn received(&mut self, n: usize) {
        if let Some(since) = self.since.take() {
            self.waited += since.elapsed();
        }
        self.bytes = self.bytes.saturating_add(n as u64);
    }

    /// The client has nothing more for now: `Ready` once the body's allowance is spent.
    pub(super) fn poll_wait(&mut self, cx: &mut Context<'_>, base: Duration) -> Poll<()> {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        let earned = Duration::from_millis(self.bytes.saturating_mul(1000) / MIN_BODY_RATE);
        let allowance = base.saturating_add(earned);
        let spent = self.waited + (now - since);
        if spent >= allowance {
            return Poll::Ready(());
        }
        let deadline = now + (allowance - spent);
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        match &mut self.timer {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// A request body held to the minimum pace (used for HTTP/2 streams, whose bytes `Strict` never
/// sees).
pub(super) struct PacedBody<B> {
    inner: B,
    pace: Pace,
    base: Duration,
    cut: Arc<AtomicBool>,
}

impl<B> PacedBody<B> {
    /// The body, and a flag that turns true if it is cut off: the upstream client that was
    /// sending it reports only a failed exchange, not why.
    pub(super) fn new(inner: B, base: Duration) -> (Self, Arc<AtomicBool>) {
        let cut = Arc::new(AtomicBool::new(false));
        let body = Self {
            inner,
            pace: Pace::default(),
            base,
            cut: cut.clone(),
        };
        (body, cut)
    }
}

impl<B> Body for PacedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let n = frame
                    .as_ref()
                    .and_then(|f| f.as_ref().ok())
                    .and_then(Frame::data_ref)
                    .map_or(0, Bytes::len);
                this.pace.received(n);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.pace.poll_wait(cx, this.base) {
                Poll::Ready(()) => {
                    this.cut.store(true, Ordering::Relaxed);
                    tracing::info!(
                        received = this.pace.bytes,
                        "request body slower than {MIN_BODY_RATE} bytes/s: stream cut off"
                    );
                    Poll::Ready(Some(Err(Box::new(BodyTooSlow))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
