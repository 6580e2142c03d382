//! Near the limit, return the allocator's free pages at once.
//!
//! Decay returns freed pages a second or two after they are freed; when many stores
//! close or many queries start together, the pages freed in that second can carry the
//! RSS over the limit while every zone stays under its bound. The I/O thread reads the
//! RSS (every 100 ms above half the limit, else once a second) and purges above
//! [`PURGE_AT_SIXTEENTHS`](super::allocator::PURGE_AT_SIXTEENTHS) of it.

use super::Zones;
use super::allocator::{PURGE_AT_SIXTEENTHS, process_rss, purge_allocator};

/// Watches the process's RSS against the memory limit (every [`PRESSURE_CHECK_MS`])
/// and returns the allocator's free pages when it is close (see
/// [`PURGE_AT_SIXTEENTHS`]).
pub(crate) struct Pressure {
    limit: usize,
    checked_ms: i64,
    rss: usize,
    warned_ms: i64,
}

/// How often the I/O thread reads the RSS while it is above half the limit (and once a
/// second otherwise).
pub(crate) const PRESSURE_CHECK_MS: i64 = 100;

impl Pressure {
    pub(crate) fn new(limit: usize) -> Pressure {
        Pressure {
            limit,
            checked_ms: 0,
            rss: 0,
            warned_ms: i64::MIN / 2,
        }
    }

    /// Whether the RSS is high enough to be read often.
    pub(crate) fn watching(&self) -> bool {
        self.rss > self.limit / 2
    }

    pub(crate) fn check(&mut self, now: i64, zones: &Zones) {
        let every = if self.watching() {
            PRESSURE_CHECK_MS
        } else {
            1000
        };
        if now - self.checked_ms < every {
            return;
        }
        self.checked_ms = now;
        let Some(rss) = process_rss() else {
            return;
        };
        self.rss = rss;
        if rss <= self.limit / 16 * PURGE_AT_SIXTEENTHS || !purge_allocator() {
            return;
        }
        self.rss = process_rss().unwrap_or(rss);
        if self.rss > self.limit && now - self.warned_ms >= 60_000 {
            self.warned_ms = now;
            log::warn!(
                "the process's RSS is {} MiB, over the memory limit of {} MiB, with the allocator's free pages returned:\n{}",
                self.rss >> 20,
                self.limit >> 20,
                zones.report()
            );
        }
    }
}
