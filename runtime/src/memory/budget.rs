//! A byte budget: the bound of one zone, charged and released by everything in it.
//!
//! Reservations are lock-free (one atomic counter). A refused reservation marks the
//! budget *blocked*, and the next release says so, so whoever waits for room (the I/O
//! thread, for the partition queues) is woken exactly when some comes back.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

/// One byte cap, shared by everything charged to a zone of the memory limit (every
/// partition queue of a runtime; every suppression buffer; every in-memory store).
#[derive(Debug)]
pub struct ByteBudget {
    cap: usize,
    used: AtomicUsize,
    blocked: AtomicBool,
}

impl ByteBudget {
    /// A budget of `cap` bytes.
    pub fn new(cap: usize) -> Self {
        ByteBudget {
            cap,
            used: AtomicUsize::new(0),
            blocked: AtomicBool::new(false),
        }
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(SeqCst)
    }

    /// Bytes that can still be reserved (ignoring the oversized-record exception).
    pub fn available(&self) -> usize {
        self.cap.saturating_sub(self.used())
    }

    /// Charges `n` bytes if they fit (or if nothing is charged at all). On refusal the
    /// budget remembers that someone is waiting, so the next release says so.
    pub fn try_reserve(&self, n: usize) -> bool {
        let mut cur = self.used.load(SeqCst);
        loop {
            if cur + n > self.cap && cur != 0 {
                self.blocked.store(true, SeqCst);
                // Re-check: a release may have happened before the flag was visible.
                cur = self.used.load(SeqCst);
                if cur + n > self.cap && cur != 0 {
                    return false;
                }
                continue;
            }
            match self.used.compare_exchange(cur, cur + n, SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Charges `n` bytes whether or not they fit: for records already taken from Kafka,
    /// which cannot be handed back (the caller stops taking more once the budget is
    /// spent, so the overshoot is at most one record).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn charge(&self, n: usize) {
        self.used.fetch_add(n, SeqCst);
    }

    /// Charges `n` bytes only if they fit under the cap, with no exception for an empty
    /// budget (for state, where refusing is safe and exceeding is not).
    pub fn try_reserve_strict(&self, n: usize) -> bool {
        let mut cur = self.used.load(SeqCst);
        loop {
            if cur + n > self.cap {
                return false;
            }
            match self.used.compare_exchange(cur, cur + n, SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Returns `n` bytes; true if a reservation had been refused since the last release
    /// (the caller should wake the fetcher).
    pub fn release(&self, n: usize) -> bool {
        if n == 0 {
            return false;
        }
        self.used.fetch_sub(n, SeqCst);
        self.blocked.swap(false, SeqCst)
    }
}
