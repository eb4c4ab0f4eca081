//! The client side of an HTTP/1 connection as hyper sees it: only bytes [`Framing`] has passed.
//!
//! On a refusal the connection is ended for hyper at the last good message boundary (it reads
//! end-of-stream), and the error answer is written when hyper shuts the connection down, so it
//! follows any answer still in flight instead of cutting into it. A request head that takes longer
//! than the header deadline from its first byte is answered 408 the same way (slow-loris), and a
//! body that trickles in slower than a minimum rate ends the connection (slow body).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tracing::info;

use super::framing::{Framing, Mode, Refusal};
use super::pace::{MIN_BODY_RATE, Pace};
use crate::error::ProxyError;

/// How much is read at a time into the buffer that holds an unfinished head (the common case, a
/// whole request per read, goes straight into hyper's buffer instead).
const READ_CHUNK: usize = 4 * 1024;
pub struct Strict<I> {
    inner: I,
    framing: Framing,
    /// Bytes read from `inner` and not yet handed to hyper; the first `released` are checked.
    buffer: BytesMut,
    released: usize,
    /// Set at the first refusal: hyper reads end-of-stream from then on.
    answer: Option<Answer>,
    inner_eof: bool,
    header_timeout: Duration,
    /// Runs from the first byte of a request head to its end.
    head_deadline: Option<Pin<Box<Sleep>>>,
    pace: Pace,
    /// Whether any byte has arrived yet (the first one tells a misdirected TLS client).
    seen_any: bool,
    /// Refusals made here are counted here: they never reach the request path's edge.
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// An error answer waiting to be written at shutdown.
struct Answer {
    bytes: Bytes,
}

impl<I> Strict<I> {
    pub fn new(
        inner: I,
        mode: Mode,
        limits: &crate::config::Limits,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            inner,
            metrics,
            framing: Framing::new(mode, limits.max_headers, limits.max_header_bytes),
            buffer: BytesMut::new(),
            released: 0,
            answer: None,
            inner_eof: false,
            header_timeout: limits.header_read_timeout,
            head_deadline: None,
            pace: Pace::default(),
            seen_any: false,
        }
    }

    /// The stream and the bytes read from it that hyper has not received (after a CONNECT, where
    /// everything is released at once, normally none).
    pub fn into_parts(self) -> (I, Bytes) {
        (self.inner, self.buffer.freeze())
    }

    /// The edge for refusals made before hyper parses a request: answered here, and counted.
    fn refuse(&mut self, error: ProxyError) {
        info!(error = %error, "request refused before parsing");
        self.metrics.refused(error.code());
        self.answer = Some(Answer {
            bytes: error.to_http1_bytes(),
        });
        // What was not released is never passed on.
        self.buffer.truncate(self.released);
    }

    /// Checks newly buffered bytes and moves the released mark.
    fn check(&mut self) {
        // A TLS record as the connection's first byte: a client that was told `https://` for
        // the proxy URL. It cannot read an HTTP answer, so the log says what to change.
        if self.released == 0 && !self.seen_any && self.buffer.first() == Some(&0x16) {
            tracing::warn!(
                "a TLS handshake arrived on the proxy port: point the client at an http:// proxy URL (HTTPS_PROXY=http://HOST:PORT); keyswap speaks TLS only inside CONNECT"
            );
            self.refuse(ProxyError::BadRequest(
                "this is keyswap's plain-HTTP proxy port: use an http:// proxy URL",
            ));
            return;
        }
        self.seen_any |= !self.buffer.is_empty();
        self.pace_next_body();
        let (n, refusal) = self.framing.scan(&self.buffer[self.released..]);
        self.released += n;
        self.apply(refusal);
    }

    /// Between requests, the next body's pace starts from nothing.
    fn pace_next_body(&mut self) {
        if self.framing.in_head() {
            self.pace = Pace::default();
        }
    }

    fn apply(&mut self, refusal: Option<Refusal>) {
        match refusal {
            None => {}
            Some(Refusal::TooLarge) => self.refuse(ProxyError::HeadersTooLarge),
            Some(Refusal::Malformed(why)) => self.refuse(ProxyError::BadRequest(why)),
        }
    }
}

impl<I: AsyncRead + Unpin> Strict<I> {
    /// Reads more from the socket into the buffer; `Ready(Ok(0))` at end of stream.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let len = self.buffer.len();
        self.buffer.resize(len + READ_CHUNK, 0);
        let mut read = ReadBuf::new(&mut self.buffer[len..]);
        let polled = Pin::new(&mut self.inner).poll_read(cx, &mut read);
        let n = read.filled().len();
        self.buffer.truncate(len + n);
        polled.map_ok(|()| n)
    }

    /// The client has sent nothing more: while a body is due, that is allowed only at the
    /// minimum rate; a slower body ends the connection.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.framing.in_body() && self.pace.poll_wait(cx, self.header_timeout).is_ready() {
            info!(
                received = self.pace.bytes,
                "request body slower than {MIN_BODY_RATE} bytes/s: connection closed"
            );
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request body too slow",
            )));
        }
        Poll::Pending
    }

    /// Whether the current head has run out of time (then it is answered 408).
    fn head_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let started = self.framing.in_head() && self.buffer.len() > self.released;
        if !started {
            self.head_deadline = None;
            return false;
        }
        let timeout = self.header_timeout;
        let deadline = self
            .head_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
        deadline.as_mut().poll(cx).is_ready()
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Strict<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.released > 0 {
                let n = this.released.min(out.remaining());
                out.put_slice(&this.buffer[..n]);
                this.buffer.advance(n);
                this.released -= n;
                if this.buffer.is_empty() {
                    // Idle connections keep no buffer (RSS per connection).
                    this.buffer = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.answer.is_some() || this.inner_eof {
                return Poll::Ready(Ok(()));
            }
            // Body bytes with nothing buffered go straight through, counted but not copied.
            if this.buffer.is_empty()
                && let Some(limit) = this.framing.pass_through()
            {
                let room = usize::try_from(limit)
                    .unwrap_or(usize::MAX)
                    .min(out.remaining());
                let mut limited = ReadBuf::new(out.initialize_unfilled_to(room));
                if Pin::new(&mut this.inner)
                    .poll_read(cx, &mut limited)?
                    .is_pending()
                {
                    return this.wait(cx);
                }
                let n = limited.filled().len();
                out.advance(n);
                this.inner_eof = n == 0;
                this.pace.received(n);
                this.framing.passed(n);
                return Poll::Ready(Ok(()));
            }
            if this.buffer.is_empty() {
                // The common case, a whole request in one read: read straight into hyper's buffer
                // and checked there; only what must wait (an unfinished head) is kept back.
                let start = out.filled().len();
                if Pin::new(&mut this.inner).poll_read(cx, out)?.is_pending() {
                    return this.wait(cx);
                }
                let read = out.filled().len() - start;
                if read == 0 {
                    this.inner_eof = true;
                    return Poll::Ready(Ok(()));
                }
                this.pace.received(read);
                this.pace_next_body();
                let (n, refusal) = this.framing.scan(&out.filled()[start..]);
                this.buffer.extend_from_slice(&out.filled()[start + n..]);
                out.set_filled(start + n);
                this.apply(refusal);
                if n > 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.head_expired(cx) {
                this.refuse(ProxyError::RequestTimeout);
                continue;
            }
            match this.fill(cx) {
                Poll::Ready(Ok(0)) => this.inner_eof = true,
                Poll::Ready(Ok(n)) => {
                    this.pace.received(n);
                    this.check();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return this.wait(cx),
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Strict<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// Writes a pending error answer first: hyper has finished with every earlier request.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(answer) = &mut this.answer {
            while !answer.bytes.is_empty() {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &answer.bytes))?;
                if n == 0 {
                    break;
                }
                answer.bytes.advance(n);
            }
            ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
