//! Rate-limited WARN lines for records dropped as `invalid_format`: the first drop is logged at
//! once, then at most one line per [`DROP_LOG_INTERVAL`], saying how many were dropped unlogged in
//! between, so a topic full of poison records cannot flood the log and one bad record is never
//! silent.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest time between two WARN lines about dropped records.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Decides which drops are logged.
#[derive(Debug, Default)]
pub struct DropLog {
    state: Mutex<DropLogState>,
}

#[derive(Debug, Default)]
struct DropLogState {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl DropLog {
    /// Counts a drop at `now`; returns `Some(n)` when this one is to be logged, `n` being the
    /// drops left unlogged since the previous line, `None` when it is only counted.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let due = state
            .last_logged
            .is_none_or(|last| now.saturating_duration_since(last) >= DROP_LOG_INTERVAL);
        if due {
            state.last_logged = Some(now);
            Some(std::mem::take(&mut state.unlogged))
        } else {
            state.unlogged += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_drop_is_logged_then_one_line_per_interval_with_the_count_between() {
        let log = DropLog::default();
        let start = Instant::now();
        assert_eq!(log.admit(start), Some(0));
        for n in 1..=5 {
            assert_eq!(log.admit(start + Duration::from_secs(n)), None);
        }
        assert_eq!(log.admit(start + DROP_LOG_INTERVAL), Some(5));
        assert_eq!(log.admit(start + DROP_LOG_INTERVAL), None);
        assert_eq!(log.admit(start + DROP_LOG_INTERVAL * 3), Some(1));
    }
}
