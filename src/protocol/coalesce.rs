//! Refusal lines in a flood: a bot's bad tokens, or every stale client after a deploy, refused
//! by the hundred a second. Each refusal used to be a log line of its own: a flood of lines
//! for the operator to wade through and for the log pipeline to carry (under `wrangler dev`,
//! a line costs more CPU than the refusal it reports). Now the first refusal of a kind is
//! written at once; those of the same kind in the next [`WINDOW_MS`] are summed into one line
//! that says how many it stands for (`count`). Every refusal is in exactly one line.
//!
//! The caller asks [`Coalescer::line`] for each refusal, and [`Coalescer::due`] whenever it
//! handles a request: the lines of windows that have passed are written then (no timer).

use std::collections::HashMap;
use std::hash::Hash;

/// How long refusals of one kind are summed after a line of that kind is written.
pub const WINDOW_MS: i64 = 1_000;

/// Kinds remembered at once. A refusal of a kind not remembered (the table is full: a flood
/// over random channel names) gets a line of its own: never lost, only not summed.
pub const MAX_KINDS: usize = 1_024;

/// Refusals of one kind since its last line.
#[derive(Debug)]
struct Window {
    /// When its last line was written (ms).
    since_ms: i64,
    /// Refusals since then, not yet in any line.
    pending: u64,
}

/// The refusals of each kind `K` not yet written, per isolate.
#[derive(Debug)]
pub struct Coalescer<K> {
    kinds: HashMap<K, Window>,
}

impl<K> Default for Coalescer<K> {
    fn default() -> Self {
        Coalescer { kinds: HashMap::new() }
    }
}

impl<K: Eq + Hash + Clone> Coalescer<K> {
    /// A refusal of `kind` at `now_ms`. `Some(count)`: write its line now, standing for `count`
    /// refusals (this one and those summed since the last line of its kind). `None`: it is
    /// summed into the next line of its kind.
    pub fn line(&mut self, kind: &K, now_ms: i64) -> Option<u64> {
        match self.kinds.get_mut(kind) {
            // A clock that went back counts as within the window.
            Some(w) if now_ms - w.since_ms < WINDOW_MS => {
                w.pending += 1;
                None
            }
            Some(w) => {
                let count = w.pending + 1;
                *w = Window { since_ms: now_ms, pending: 0 };
                Some(count)
            }
            None => {
                if self.kinds.len() < MAX_KINDS {
                    self.kinds.insert(kind.clone(), Window { since_ms: now_ms, pending: 0 });
                }
                Some(1)
            }
        }
    }

    /// The lines due at `now_ms`: each kind whose window has passed with refusals summed, with
    /// their count (write one line each). Every passed window is forgotten: the next refusal
    /// of its kind is written at once.
    pub fn due(&mut self, now_ms: i64) -> Vec<(K, u64)> {
        if self.kinds.is_empty() {
            return Vec::new();
        }
        let mut due = Vec::new();
        self.kinds.retain(|kind, w| {
            if now_ms - w.since_ms < WINDOW_MS {
                return true;
            }
            if w.pending > 0 {
                due.push((kind.clone(), w.pending));
            }
            false
        });
        due
    }

    /// Whether any window is open (nothing to do for [`Self::due`] otherwise).
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_is_written_at_once_and_the_next_ones_are_summed_for_a_window() {
        let mut c = Coalescer::default();
        assert_eq!(c.line(&"bad_token", 10_000), Some(1));
        for t in 10_001..10_100 {
            assert_eq!(c.line(&"bad_token", t), None);
        }
        assert_eq!(c.due(10_999), vec![], "the window is still open");
        // A refusal after the window: its line stands for itself and the 99 summed.
        assert_eq!(c.line(&"bad_token", 11_000), Some(100));
        assert_eq!(c.line(&"bad_token", 11_001), None);
        assert_eq!(c.due(12_000), vec![("bad_token", 1)]);
        assert!(c.is_empty());
        // Forgotten: the next one is written at once.
        assert_eq!(c.line(&"bad_token", 12_001), Some(1));
    }

    #[test]
    fn kinds_are_summed_apart_and_a_window_with_nothing_summed_writes_nothing() {
        let mut c = Coalescer::default();
        assert_eq!(c.line(&"a", 0), Some(1));
        assert_eq!(c.line(&"b", 0), Some(1));
        assert_eq!(c.line(&"a", 1), None);
        assert_eq!(c.line(&"a", 2), None);
        let mut due = c.due(5_000);
        due.sort();
        assert_eq!(due, vec![("a", 2)], "b had no refusal after its line");
        assert!(c.is_empty());
    }

    #[test]
    fn a_clock_that_goes_back_stays_in_the_window() {
        let mut c = Coalescer::default();
        assert_eq!(c.line(&"a", 5_000), Some(1));
        assert_eq!(c.line(&"a", 4_000), None);
        assert_eq!(c.due(4_500), vec![]);
        assert_eq!(c.due(6_000), vec![("a", 1)]);
    }

    #[test]
    fn a_full_table_writes_a_new_kind_alone_and_remembers_no_more() {
        let mut c = Coalescer::default();
        for k in 0..MAX_KINDS {
            assert_eq!(c.line(&k, 0), Some(1));
        }
        for _ in 0..3 {
            assert_eq!(c.line(&MAX_KINDS, 1), Some(1), "not remembered: a line each");
        }
        assert_eq!(c.kinds.len(), MAX_KINDS);
        assert_eq!(c.line(&0, 2), None, "a remembered kind is still summed");
        assert_eq!(c.due(1_000), vec![(0, 1)]);
        assert!(c.is_empty());
    }

    /// Whatever the arrivals, every refusal is in exactly one line: the counts written at once
    /// and the counts due add up to the refusals.
    #[test]
    fn every_refusal_is_in_exactly_one_line() {
        let mut c = Coalescer::default();
        let (mut refusals, mut written, mut lines) = (0u64, 0u64, 0u64);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut now = 0i64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            now += (seed % 40) as i64;
            let kind = seed % 7;
            refusals += 1;
            if let Some(n) = c.line(&kind, now) {
                written += n;
                lines += 1;
            }
            if seed.is_multiple_of(97) {
                for (_, n) in c.due(now) {
                    written += n;
                    lines += 1;
                }
            }
        }
        for (_, n) in c.due(now + WINDOW_MS) {
            written += n;
            lines += 1;
        }
        assert_eq!(written, refusals);
        assert!(lines * 5 < refusals, "{lines} lines for {refusals} refusals");
    }
}
