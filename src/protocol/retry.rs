//! The one retry rule for every call a room must keep trying until it lands: the chat
//! webhook (to the backend) and the copies forwarded to inboxes (to other objects).
//!
//! Each caller keeps its calls in a durable queue with their attempts and next try; the
//! engine asks [`settle`] after each attempt and folds the next try into its one deadline
//! (`poll_timeout`), which the shell turns into the object's alarm. No timer anywhere else.

/// First retry after 1 s, doubling up to 5 minutes.
const FIRST_RETRY_MS: i64 = 1_000;
const MAX_RETRY_MS: i64 = 5 * 60 * 1_000;
/// A call that has failed for a whole day is dropped (and logged).
pub const GIVE_UP_AFTER_MS: i64 = 24 * 60 * 60 * 1_000;

/// What becomes of a queued call after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    /// Refused or unreachable for [`GIVE_UP_AFTER_MS`]: dropped.
    GaveUp,
    /// Tried again at this time (ms).
    RetryAt(i64),
}

/// After an attempt of a call queued at `created` that had failed `attempts` times before:
/// delivered, retried with backoff, or given up once a day old.
pub fn settle(attempts: u32, created: i64, delivered: bool, now: i64) -> Settled {
    if delivered {
        Settled::Delivered
    } else if now - created > GIVE_UP_AFTER_MS {
        Settled::GaveUp
    } else {
        Settled::RetryAt(now + backoff_ms(attempts + 1))
    }
}

/// Delay before attempt `attempts + 1`, after `attempts` failures.
pub fn backoff_ms(attempts: u32) -> i64 {
    let exp = attempts.saturating_sub(1).min(20);
    (FIRST_RETRY_MS << exp).min(MAX_RETRY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_delivers_retries_with_backoff_or_gives_up_after_a_day() {
        assert_eq!(settle(0, 0, true, 5), Settled::Delivered);
        assert_eq!(settle(0, 0, false, 5), Settled::RetryAt(5 + 1_000));
        assert_eq!(settle(3, 0, false, 5), Settled::RetryAt(5 + 8_000));
        assert_eq!(settle(0, 0, false, GIVE_UP_AFTER_MS), Settled::RetryAt(GIVE_UP_AFTER_MS + 1_000));
        assert_eq!(settle(0, 0, false, GIVE_UP_AFTER_MS + 1), Settled::GaveUp);
        assert_eq!(settle(0, 0, true, GIVE_UP_AFTER_MS + 1), Settled::Delivered, "a late success still counts");
    }

    #[test]
    fn retries_back_off_exponentially_to_a_cap() {
        assert_eq!((1..=5).map(backoff_ms).collect::<Vec<_>>(), [1_000, 2_000, 4_000, 8_000, 16_000]);
        assert_eq!(backoff_ms(30), MAX_RETRY_MS);
    }
}
