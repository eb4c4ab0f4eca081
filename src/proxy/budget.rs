//! The memory budget for bodies held whole (SPEC §8 `[limits] max_buffered_body_bytes`): a request
//! body substituted whole or kept for an OAuth replay, a short answer scrubbed whole. They share
//! one process-wide budget; a body that does not fit is streamed instead, never refused for it.
//! Without it, many HTTP/2 streams each announcing a body just under the per-body limit would
//! pin memory without bound.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

/// Bytes that bodies held whole may use, all requests together.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// `bytes` of the budget until the reservation drops, or `None` when they are not free.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .ok()?;
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Part of the budget, given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Reservation {
    /// Reserves `more` bytes besides these; `false` (and nothing reserved) when they are not free.
    pub fn grow(&mut self, more: usize) -> bool {
        let limit = self.budget.limit;
        let grown = self
            .budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|&total| total <= limit)
            })
            .is_ok();
        if grown {
            self.bytes += more;
        }
        grown
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A body that keeps its reservation for as long as it exists (until hyper has sent it).
pub struct Reserved<B> {
    inner: B,
    _reservation: Reservation,
}

impl<B> Reserved<B> {
    pub fn new(inner: B, reservation: Reservation) -> Self {
        Self {
            inner,
            _reservation: reservation,
        }
    }
}

impl<B: Body + Unpin> Body for Reserved<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
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

    #[test]
    fn a_reservation_grows_within_the_budget_and_gives_it_all_back() {
        let budget = Budget::new(100);
        let mut a = budget.reserve(0).unwrap();
        assert!(a.grow(70));
        assert!(!a.grow(31), "past the limit");
        assert_eq!(budget.used(), 70);
        assert!(a.grow(30));
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = Budget::new(100);
        let a = budget.reserve(60).unwrap();
        assert!(budget.reserve(41).is_none());
        let b = budget.reserve(40).unwrap();
        assert_eq!(budget.used(), 100);
        drop(a);
        assert!(budget.reserve(60).is_some());
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(budget.reserve(usize::MAX).is_none());
    }
}
