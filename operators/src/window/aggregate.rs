//! The windowed aggregations' processors: tumbling and hopping, session and sliding
//! windows (Kafka Streams' `KStreamWindowAggregate`, `KStreamSessionWindowAggregate`,
//! `KStreamSlidingWindowAggregate`), and the codec of a sliding window's aggregate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use weir_runtime::internals::{InternalContext, InternalWindowedContext};
use weir_runtime::serde::Serde;
use weir_runtime::{
    Change, Data, Error, Processor, ProcessorContext, Record, Result, Window, Windowed,
};

use super::{Agg, Init, Merge, SessionWindows, SlidingWindows, TimeWindows};

/// Logs a record dropped for a closed window and counts it.
fn drop_late<K, V>(ctx: &mut ProcessorContext<'_, K, V>, ts: i64, window: Window, observed: i64) {
    log::debug!(
        "'{}' drops a record at {ts}: window {window} closed (observed stream time {observed})",
        ctx.processor_name()
    );
    ctx.record_dropped_late();
}

/// What every windowed aggregation holds: its store, how to start and fold an
/// aggregate, whether downstream wants old values, and its observed stream time.
pub(super) struct Core<K, V, VA> {
    pub(super) store: Arc<str>,
    pub(super) init: Init<VA>,
    pub(super) agg: Agg<K, V, VA>,
    pub(super) send_old: Arc<AtomicBool>,
    pub(super) observed: i64,
    /// `EmitStrategy::on_window_close`: windows go downstream once, when they close,
    /// read back from the store (its changes are not forwarded).
    pub(super) emit_final: bool,
    /// With `emit_final`: the close time up to which windows have been emitted.
    pub(super) emitted_to: i64,
}

impl<K: Data, V, VA> Core<K, V, VA> {
    pub(super) fn new(
        store: Arc<str>,
        send_old: Arc<AtomicBool>,
        init: &Init<VA>,
        agg: &Agg<K, V, VA>,
        emit_final: bool,
    ) -> Self {
        Core {
            store,
            init: init.clone(),
            agg: agg.clone(),
            send_old,
            observed: i64::MIN,
            emit_final,
            emitted_to: i64::MIN,
        }
    }

    /// At init: forward the store's changes downstream (unless windows are emitted when
    /// they close), and pick up the observed stream time stored with them; `close`
    /// gives the close time of a stream time (what was emitted before a restart).
    fn init<S: Data>(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<S>>,
        close: impl Fn(i64) -> i64,
    ) -> Result<()> {
        if !self.emit_final {
            ctx.forward_windowed_changes(&self.store, self.send_old.load(Ordering::Acquire))?;
        }
        self.observed = ctx.stored_stream_time(&self.store)?.unwrap_or(i64::MIN);
        if self.observed > i64::MIN {
            self.emitted_to = close(self.observed);
        }
        Ok(())
    }

    /// With `emit_final`: the close time moved from `emitted_to` to `close`, so the
    /// windows `closed(emitted_to, close)` lists (each with its value and timestamp)
    /// go downstream, in the order given.
    fn emit_closed<S: Data>(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<S>>,
        close: i64,
        closed: impl FnOnce(
            &mut ProcessorContext<'_, Windowed<K>, Change<S>>,
            i64,
            i64,
        ) -> Result<Vec<(Windowed<K>, S, i64)>>,
    ) -> Result<()> {
        if !self.emit_final || close <= self.emitted_to {
            return Ok(());
        }
        let from = self.emitted_to;
        self.emitted_to = close;
        for (key, value, ts) in closed(ctx, from, close)? {
            let change = Change {
                new: Some(value),
                old: None,
            };
            ctx.forward(Record::new(key, change, ts))?;
        }
        Ok(())
    }

    /// At each commit: store the observed stream time.
    fn flush<S>(&self, ctx: &mut ProcessorContext<'_, Windowed<K>, S>) -> Result<()> {
        if self.observed > i64::MIN {
            ctx.store_stream_time(&self.store, self.observed)?;
        }
        Ok(())
    }
}

/// Tumbling and hopping window aggregation.
pub(super) struct WindowAggregate<K, V, VA> {
    pub(super) core: Core<K, V, VA>,
    pub(super) windows: TimeWindows,
}

impl<K: Data, V: Data, VA: Data> Processor<K, V, Windowed<K>, Change<VA>>
    for WindowAggregate<K, V, VA>
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>) -> Result<()> {
        let grace = self.windows.grace;
        self.core.init(ctx, |t| t.saturating_sub(grace))
    }

    fn process(
        &mut self,
        r: Record<K, V>,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>,
    ) -> Result<()> {
        let ts = r.timestamp;
        if ts < 0 {
            drop_late(ctx, ts, Window::new(ts, ts), self.core.observed);
            return Ok(());
        }
        if ts > self.core.observed && self.core.emit_final {
            // Windows closed by this record (end <= stream time - grace) go downstream
            // before the store expires them; the record itself only updates open ones.
            let size = self.windows.size;
            let store = self.core.store.clone();
            self.core.emit_closed(
                ctx,
                ts.saturating_sub(self.windows.grace),
                |ctx, from, to| {
                    let mut s = ctx.window_store::<K, VA>(&store)?;
                    let mut closed = s.fetch_all_with_timestamp(
                        from.saturating_sub(size).saturating_add(1).max(0),
                        to.saturating_sub(size),
                    )?;
                    closed.sort_by_key(|(w, _, _)| w.window.start);
                    Ok(closed)
                },
            )?;
        }
        let mut store = ctx.window_store::<K, VA>(&self.core.store)?;
        if ts > self.core.observed {
            // Windows this record closes: their cached updates go downstream first
            // (with the default retention they are expired too, so not written).
            let closed = |t: i64| {
                (t.saturating_sub(self.windows.grace) - self.windows.size)
                    .div_euclid(self.windows.advance)
            };
            let closes = self.core.observed == i64::MIN || closed(ts) > closed(self.core.observed);
            self.core.observed = ts;
            store.expire(ts)?;
            if closes && !self.core.emit_final {
                // Windows ending at or before stream time - grace are closed.
                let open_from = ts.saturating_sub(self.windows.grace) - self.windows.size + 1;
                store.flush_cached_before(open_from)?;
            }
        }
        let close = self.core.observed - self.windows.grace;
        let mut late = Vec::new();
        for start in self.windows.starts(ts) {
            let end = start + self.windows.size;
            if end <= close {
                late.push(Window::new(start, end));
                continue;
            }
            // The window's update carries the largest timestamp of its records (Kafka
            // Streams' KStreamWindowAggregate).
            let (current, stamp) = match store.fetch_with_timestamp(&r.key, start)? {
                Some((a, t)) => (a, t.max(ts)),
                None => ((self.core.init)(), ts),
            };
            let new = (self.core.agg)(&r.key, r.value.clone(), current);
            store.put_with_timestamp(&r.key, start, &new, stamp)?;
        }
        for w in late {
            drop_late(ctx, ts, w, self.core.observed);
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>) -> Result<()> {
        self.core.flush(ctx)
    }
}

/// Session window aggregation (Kafka Streams' `KStreamSessionWindowAggregate`).
pub(super) struct SessionAggregate<K, V, VA> {
    pub(super) core: Core<K, V, VA>,
    pub(super) windows: SessionWindows,
    pub(super) merge: Merge<K, VA>,
}

impl<K: Data, V: Data, VA: Data> Processor<K, V, Windowed<K>, Change<VA>>
    for SessionAggregate<K, V, VA>
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>) -> Result<()> {
        let delay = self.windows.gap.saturating_add(self.windows.grace);
        self.core.init(ctx, |t| t.saturating_sub(delay))
    }

    fn process(
        &mut self,
        r: Record<K, V>,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>,
    ) -> Result<()> {
        let ts = r.timestamp;
        if ts < 0 {
            drop_late(ctx, ts, Window::new(ts, ts), self.core.observed);
            return Ok(());
        }
        self.core.observed = self.core.observed.max(ts);
        self.merge_in(r, ctx)?;
        if self.core.emit_final {
            // Sessions closed now (end + gap + grace < stream time) go downstream before
            // the store expires them.
            let store = self.core.store.clone();
            let close = self
                .core
                .observed
                .saturating_sub(self.windows.gap)
                .saturating_sub(self.windows.grace);
            self.core.emit_closed(ctx, close, |ctx, from, to| {
                let mut s = ctx.session_store::<K, VA>(&store)?;
                let mut closed: Vec<_> = s
                    .fetch_ending(from.max(0), to.saturating_sub(1))?
                    .into_iter()
                    .map(|(w, v)| {
                        let end = w.window.end;
                        (w, v, end)
                    })
                    .collect();
                closed.sort_by_key(|(w, _, _)| w.window.end);
                Ok(closed)
            })?;
        }
        ctx.session_store::<K, VA>(&self.core.store)?
            .expire(self.core.observed)
    }

    fn flush(&mut self, ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>) -> Result<()> {
        self.core.flush(ctx)
    }
}

impl<K: Data, V: Data, VA: Data> SessionAggregate<K, V, VA> {
    /// Merges record `r` into its key's sessions (or drops it as late).
    fn merge_in(
        &mut self,
        r: Record<K, V>,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>,
    ) -> Result<()> {
        let ts = r.timestamp;
        let gap = self.windows.gap;
        // Kafka Streams' rule: a record is late only when the session it would merge
        // into (or create) ends before stream time - gap - grace, so a record older
        // than stream time - grace can still extend an open session.
        let close = self
            .core
            .observed
            .saturating_sub(self.windows.grace)
            .saturating_sub(gap);
        let mut store = ctx.session_store::<K, VA>(&self.core.store)?;
        let near = store.find_sessions(
            &r.key,
            ts.saturating_sub(gap),
            ts.saturating_add(gap),
            self.core.observed,
        )?;
        let mut merged = Window::new(ts, ts);
        let mut acc = (self.core.init)();
        for (w, v) in &near {
            merged = Window::new(merged.start.min(w.start), merged.end.max(w.end));
            acc = (self.merge)(&r.key, acc, v.clone());
        }
        if merged.end < close {
            drop_late(ctx, ts, merged, self.core.observed);
            return Ok(());
        }
        // Every session merged away goes downstream as a tombstone (carrying its own
        // end), then the merged session, also when it is one of the old ones.
        if merged != Window::new(ts, ts) {
            for (w, _) in &near {
                store.put(&r.key, *w, None)?;
            }
        }
        let acc = (self.core.agg)(&r.key, r.value, acc);
        store.put(&r.key, merged, Some(&acc))
    }
}

/// A sliding window's aggregate and the timestamp of its latest record, which tells
/// the aggregation which records a window holds when it builds new windows from it.
#[derive(Clone)]
pub(super) struct Stamped<VA> {
    pub(super) latest: i64,
    pub(super) value: VA,
}

/// Stores a [`Stamped`] as the latest timestamp (8 bytes, big-endian), a tag (0 = the
/// aggregate is null, 1 = its bytes follow) and the aggregate's bytes.
pub(super) struct StampedSerde<VA>(pub(super) Arc<dyn Serde<VA>>);

impl<VA: 'static> Serde<Stamped<VA>> for StampedSerde<VA> {
    fn serialize(&self, value: &Stamped<VA>) -> Result<Option<weir_runtime::serde::Bytes>> {
        let mut out = Vec::new();
        self.serialize_into(value, &mut out)?;
        Ok(Some(out.into()))
    }

    fn deserialize(&self, data: Option<&[u8]>) -> Result<Stamped<VA>> {
        let bytes = data.unwrap_or_default();
        let (Some(latest), Some(&tag)) = (bytes.get(..8), bytes.get(8)) else {
            return Err(Error::Serde(format!(
                "a sliding window entry needs at least 9 bytes, got {}",
                bytes.len()
            )));
        };
        let latest = i64::from_be_bytes(latest.try_into().expect("8 bytes"));
        let value = match tag {
            0 => self.0.deserialize(None)?,
            1 => self.0.deserialize(Some(&bytes[9..]))?,
            t => {
                return Err(Error::Serde(format!(
                    "a sliding window entry has tag {t} (expected 0 or 1)"
                )));
            }
        };
        Ok(Stamped { latest, value })
    }

    fn serialize_into(&self, value: &Stamped<VA>, out: &mut Vec<u8>) -> Result<bool> {
        out.extend_from_slice(&value.latest.to_be_bytes());
        let tag = out.len();
        out.push(1);
        if !self.0.serialize_into(&value.value, out)? {
            out[tag] = 0;
        }
        Ok(true)
    }
}

/// Drops the latest timestamps from a sliding aggregation's changes.
pub(super) struct Unstamp;

impl<K: Data, VA: Data> Processor<K, Change<Stamped<VA>>, K, Change<VA>> for Unstamp {
    fn process(
        &mut self,
        r: Record<K, Change<Stamped<VA>>>,
        ctx: &mut ProcessorContext<'_, K, Change<VA>>,
    ) -> Result<()> {
        let Record {
            key,
            value,
            timestamp,
            headers,
        } = r;
        // A window's update carries the largest timestamp of its records, as Kafka
        // Streams' KStreamSlidingWindowAggregate forwards it.
        let timestamp = value.new.as_ref().map_or(timestamp, |s| s.latest);
        let change = Change {
            new: value.new.map(|s| s.value),
            old: value.old.map(|s| s.value),
        };
        ctx.forward(Record::new(key, change, timestamp).with_headers(headers))
    }
}

/// Sliding window aggregation. A key's stored windows are exactly the non-empty
/// windows [`SlidingWindows`] defines over its accepted records (less those expired),
/// each with its aggregate and latest record. A new record at `t`:
///
/// 1. goes into every stored window containing `t`;
/// 2. creates its left window `L = [t - d, t]` (`[0, d]` while `t < d`) unless stored.
///    L's other records are those in `[t - d, t)`. If there are any, the stored window
///    with the largest start before L's holds exactly them: a record in between would
///    have a left or right window starting later. So L starts from that window's
///    aggregate if its latest record is in L, else from `init()`;
/// 3. creates its right window `R = [t + 1, t + d + 1]` unless stored, if it is not
///    empty: R holds the records of the latest-starting window containing `t` that
///    come after `t` (by the same argument), so it copies that window if its latest
///    record is after `t`;
/// 4. creates the right window of the record before it if `t` is the first record in
///    it: `[p + 1, p + d + 1]` for the latest stored record time `p < t`, if it
///    contains `t` and is not stored, holding `t` alone.
///
/// Everything it reads starts at or after `t - 2d`, which the retention (`2d + grace + 1`)
/// keeps. A window closes when its end falls before stream time - grace: a record
/// changes or creates only the windows still open (Kafka Streams' rule), so no window
/// changes after it closes.
pub(super) struct SlidingAggregate<K, V, VA> {
    pub(super) core: Core<K, V, VA>,
    pub(super) windows: SlidingWindows,
}

impl<K: Data, V: Data, VA: Data> Processor<K, V, Windowed<K>, Change<Stamped<VA>>>
    for SlidingAggregate<K, V, VA>
{
    fn init(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<Stamped<VA>>>,
    ) -> Result<()> {
        let grace = self.windows.grace;
        self.core.init(ctx, |t| t.saturating_sub(grace))
    }

    fn process(
        &mut self,
        r: Record<K, V>,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<Stamped<VA>>>,
    ) -> Result<()> {
        let t = r.timestamp;
        let d = self.windows.difference;
        let left = t.saturating_sub(d).max(0);
        if t < 0 {
            drop_late(ctx, t, Window::new(t, t), self.core.observed);
            return Ok(());
        }
        self.core.observed = self.core.observed.max(t);
        // Kafka Streams' rule: lateness is judged per window. A window is closed once
        // its end is before stream time - grace; a record is dropped outright only if
        // even its right window has closed, otherwise it updates (or creates) every
        // window of it still open and skips, counting each, the closed ones.
        let close = self.core.observed.saturating_sub(self.windows.grace);
        if t.saturating_add(d) < close {
            drop_late(ctx, t, Window::new(left, left + d), self.core.observed);
            return Ok(());
        }
        let right = t + 1;
        let mut store = ctx.window_store::<K, Stamped<VA>>(&self.core.store)?;
        let stored = store.fetch_range(&r.key, t.saturating_sub(2 * d).max(0), right)?;
        let (mut left_stored, mut right_stored) = (false, false);
        let mut before_left = None;
        let mut containing = None;
        let mut previous = None;
        for (w, s) in &stored {
            if s.latest < t {
                previous = previous.max(Some(s.latest));
            }
            if w.start < left {
                before_left = Some(s);
            }
            left_stored |= w.start == left;
            right_stored |= w.start == right;
            if w.start <= t && t <= w.end {
                containing = Some(s);
            }
        }
        let add = |s: &Stamped<VA>| Stamped {
            latest: s.latest.max(t),
            value: (self.core.agg)(&r.key, r.value.clone(), s.value.clone()),
        };
        let fresh = || Stamped {
            latest: t,
            value: (self.core.agg)(&r.key, r.value.clone(), (self.core.init)()),
        };
        let mut puts = Vec::new();
        // 1. Windows containing t.
        for (w, s) in &stored {
            if w.start <= t && t <= w.end {
                puts.push((w.start, add(s)));
            }
        }
        // 2. The left window.
        if !left_stored {
            let new = match before_left {
                Some(s) if s.latest >= left => add(s),
                _ => fresh(),
            };
            puts.push((left, new));
        }
        // 3. The right window.
        if !right_stored
            && let Some(s) = containing
            && s.latest > t
        {
            puts.push((right, (*s).clone()));
        }
        // 4. The previous record's right window, which t is the first record of.
        if let Some(p) = previous
            && p + 1 != left
            && t <= p + 1 + d
            && !stored.iter().any(|(w, _)| w.start == p + 1)
        {
            puts.push((p + 1, fresh()));
        }
        let mut closed = Vec::new();
        for (start, value) in puts {
            if start.saturating_add(d) < close {
                closed.push(Window::new(start, start + d));
                continue;
            }
            store.put(&r.key, start, Some(&value))?;
        }
        for w in closed {
            drop_late(ctx, t, w, self.core.observed);
        }
        if self.core.emit_final {
            // Windows closed now (end + grace < stream time) go downstream before the
            // store expires them, each at its latest record's timestamp.
            let store = self.core.store.clone();
            self.core.emit_closed(ctx, close, |ctx, from, to| {
                let mut s = ctx.window_store::<K, Stamped<VA>>(&store)?;
                let mut closed: Vec<_> = s
                    .fetch_all(
                        from.saturating_sub(d).max(0),
                        to.saturating_sub(d).saturating_sub(1),
                    )?
                    .into_iter()
                    .map(|(w, v)| {
                        let latest = v.latest;
                        (w, v, latest)
                    })
                    .collect();
                closed.sort_by_key(|(w, _, _)| w.window.start);
                Ok(closed)
            })?;
        }
        ctx.window_store::<K, Stamped<VA>>(&self.core.store)?
            .expire(self.core.observed)
    }

    fn flush(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<Stamped<VA>>>,
    ) -> Result<()> {
        self.core.flush(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_runtime::serde::I64Serde;

    #[test]
    fn corrupt_sliding_window_entries_are_errors() {
        let serde =
            StampedSerde::<Option<i64>>(Arc::new(weir_runtime::serde::OptionSerde(I64Serde)));
        let valid = serde
            .serialize(&Stamped {
                latest: 1_000,
                value: Some(42),
            })
            .unwrap()
            .unwrap();
        let back = serde.deserialize(Some(&valid)).unwrap();
        assert_eq!((back.latest, back.value), (1_000, Some(42)));
        crate::corruption::each(&valid, |b| {
            let _ = serde.deserialize(Some(b));
        });
    }
}
