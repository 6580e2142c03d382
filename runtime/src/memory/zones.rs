//! The owner of the zones: each zone's account, read for the report and the gauges.
//!
//! The memory room knows no store or queue: whatever holds a zone's bytes implements
//! [`Account`] (a [`ByteBudget`] does; so do the state room's RocksDB environment and
//! record cache), and the runtime hands one account per zone to [`Zones`] when it
//! starts.

use std::sync::Arc;

use super::allocator::{allocator_stats, process_rss};
use super::report::{MemoryReport, ZoneUsage, publish};
use super::{ByteBudget, Zone};

/// What a zone's holder tells the memory room.
pub(crate) trait Account: Send + Sync {
    /// Bytes in use now, and the bound.
    fn usage(&self) -> (usize, usize);
    /// Sets the holder's own detailed gauges (called once a second).
    fn publish_metrics(&self) {}
}

impl Account for ByteBudget {
    fn usage(&self) -> (usize, usize) {
        (self.used(), self.cap())
    }
}

/// Every zone's account, and the limit they divide (shared by the runtime and its I/O
/// thread, which publishes the gauges).
#[derive(Clone)]
pub(crate) struct Zones {
    pub(crate) limit: usize,
    accounts: Vec<(Zone, Arc<dyn Account>)>,
}

impl Zones {
    /// The zones of a runtime with memory limit `limit`: one account per zone, in
    /// [`Zone::ALL`]'s order.
    pub(crate) fn new(limit: usize, accounts: Vec<(Zone, Arc<dyn Account>)>) -> Self {
        debug_assert!(
            accounts.iter().map(|(z, _)| *z).eq(Zone::ALL),
            "one account per zone, in Zone::ALL's order"
        );
        Zones { limit, accounts }
    }

    /// The report now.
    pub(crate) fn report(&self) -> MemoryReport {
        let zones: Vec<ZoneUsage> = self
            .accounts
            .iter()
            .map(|(zone, a)| {
                let (used, bound) = a.usage();
                ZoneUsage {
                    zone: zone.name(),
                    used,
                    bound,
                }
            })
            .collect();
        let bounds: usize = zones.iter().map(|z| z.bound).sum();
        MemoryReport {
            limit: self.limit,
            headroom: self.limit.saturating_sub(bounds),
            zones,
            allocator: allocator_stats(),
            rss: process_rss(),
        }
    }

    /// Sets every gauge of the memory: the accounts' own, and the report's.
    pub(crate) fn publish_metrics(&self) {
        for (_, a) in &self.accounts {
            a.publish_metrics();
        }
        publish(&self.report());
    }
}
