//! Idle client connections: closed after `idle_timeout_secs` with no bytes moving and no request
//! in flight. hyper has no such timer for a server connection, so the I/O is wrapped to note
//! activity and the service notes requests in flight.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How often, per idle timeout, the idle timer looks: a connection is closed between one and
/// 1.25 idle timeouts after its last activity.
const LOOKS_PER_TIMEOUT: u32 = 4;

/// Whether a connection has moved bytes, and how many requests it has in flight. Activity is a
/// counter, not a timestamp: every read and write bumps it (several per request), and reading
/// the clock each time cost more than the rest of the bookkeeping; the idle timer compares it
/// between its looks instead.
#[derive(Debug)]
pub struct Activity {
    moves: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            moves: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks a request in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Resolves once the connection has been idle, with nothing in flight, for at least `limit`
    /// (at most 1.25 × `limit`), counted from this call.
    pub async fn expired(&self, limit: Duration) {
        let step = (limit / LOOKS_PER_TIMEOUT).max(Duration::from_millis(1));
        let mut seen = self.moves.load(Ordering::Relaxed);
        let mut quiet = Duration::ZERO;
        loop {
            tokio::time::sleep(step).await;
            let now = self.moves.load(Ordering::Relaxed);
            if now != seen || self.in_flight.load(Ordering::Relaxed) > 0 {
                (seen, quiet) = (now, Duration::ZERO);
                continue;
            }
            quiet += step;
            if quiet >= limit {
                return;
            }
        }
    }
}

/// A request in flight on a connection.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// I/O that records activity on every completed read or write.
pub struct Tracked<T> {
    pub inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        activity.touch();
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if poll.is_ready() {
            self.activity.touch();
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if poll.is_ready() {
            self.activity.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if poll.is_ready() {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expires_only_when_idle_and_nothing_is_in_flight() {
        let activity = Activity::new();
        activity.touch();
        let guard = activity.begin();
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            activity.expired(Duration::from_secs(1)),
        )
        .await;
        assert!(waited.is_err(), "a request in flight keeps the connection");
        drop(guard);
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            activity.expired(Duration::from_secs(1)),
        )
        .await;
        assert!(waited.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn activity_puts_the_end_off_by_one_to_one_and_a_quarter_timeouts() {
        let activity = Activity::new();
        let limit = Duration::from_secs(4);
        let start = tokio::time::Instant::now();
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.expired(limit).await })
        };
        // Bytes move at 2.5 s and at 5.5 s, then nothing.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        activity.touch();
        tokio::time::sleep(Duration::from_secs(3)).await;
        activity.touch();
        let last = tokio::time::Instant::now();
        watcher.await.unwrap();
        let idle = last.elapsed();
        assert!(idle >= limit && idle <= limit + limit / 4, "{idle:?}");
        assert!(start.elapsed() > Duration::from_secs(9));
    }
}
