//! When outstanding requests time out, kept in arrival order (a queue per timeout value)
//! of (deadline, request number, slot): an answer removes nothing from them (a removal
//! from the middle of a queue would cost more than the request); a deadline whose slot
//! holds another request, or none, is skipped when it comes up, or dropped when the
//! queues outgrow the table.

use std::collections::VecDeque;

/// Seconds to the milliseconds deadlines are kept in (0 for what is not a time).
pub(super) fn millis(seconds: f64) -> u64 {
    if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1000.0) as u64
    } else {
        0
    }
}

/// The deadlines of requests that arrived under one timeout, in arrival order (so in
/// deadline order: the clock does not go back): (deadline in ms, the request's number, its
/// slot), which say whether the request is still there without a lookup.
struct Queue {
    timeout_ms: u64,
    entries: VecDeque<(u64, u64, u32)>,
}

/// One queue per timeout in force when requests arrived (one, unless a reload changed it
/// while requests were outstanding).
#[derive(Default)]
pub(super) struct Deadlines {
    queues: Vec<Queue>,
    /// Entries in all queues.
    queued: usize,
    /// The queue deadlines went to last.
    last: usize,
}

impl Deadlines {
    /// Keeps the entries `live` says are of requests still in the table, and the queues
    /// that hold some or are of the timeout in force.
    pub(super) fn compact(&mut self, timeout_ms: u64, live: impl Fn(u64, u32) -> bool) {
        for q in &mut self.queues {
            q.entries.retain(|&(_, seq, n)| live(seq, n));
        }
        self.drop_idle(timeout_ms);
        self.queued = self.queues.iter().map(|q| q.entries.len()).sum();
    }

    /// Drops the empty queues of timeouts no longer in force.
    fn drop_idle(&mut self, timeout_ms: u64) {
        self.queues
            .retain(|q| !q.entries.is_empty() || q.timeout_ms == timeout_ms);
    }

    pub(super) fn push(&mut self, timeout_ms: u64, deadline: u64, seq: u64, n: u32) {
        if self
            .queues
            .get(self.last)
            .is_none_or(|q| q.timeout_ms != timeout_ms)
        {
            // The timeout changed (a reload): the queue of one no longer in force goes
            // once its requests are gone.
            self.drop_idle(timeout_ms);
            self.last = match self.queues.iter().position(|q| q.timeout_ms == timeout_ms) {
                Some(i) => i,
                None => {
                    self.queues.push(Queue {
                        timeout_ms,
                        entries: VecDeque::new(),
                    });
                    self.queues.len() - 1
                }
            };
        }
        let queue = &mut self.queues[self.last].entries;
        // Under one timeout, in arrival order, the deadlines only grow; a clock that went
        // back still gets its place (at O(n)).
        if queue.back().is_none_or(|(last, _, _)| *last <= deadline) {
            queue.push_back((deadline, seq, n));
        } else {
            let at = queue.partition_point(|(d, _, _)| *d <= deadline);
            queue.insert(at, (deadline, seq, n));
        }
        self.queued += 1;
    }

    /// Takes the entries due at `limit` (ms), queue by queue.
    pub(super) fn due(&mut self, limit: u64) -> Vec<(u64, u32)> {
        let mut due = Vec::new();
        for q in &mut self.queues {
            while let Some(&(deadline, seq, n)) = q.entries.front() {
                if deadline > limit {
                    break;
                }
                q.entries.pop_front();
                due.push((seq, n));
            }
        }
        self.queued -= due.len();
        due
    }

    /// Entries in all queues.
    pub(super) fn queued(&self) -> usize {
        self.queued
    }

    /// Entries in all queues, counted one by one (the tests' check of `queued`).
    #[cfg(test)]
    pub(super) fn entries(&self) -> usize {
        self.queues.iter().map(|q| q.entries.len()).sum()
    }

    /// Queues kept (one per timeout with requests outstanding, and the one in force).
    pub(super) fn queues(&self) -> usize {
        self.queues.len()
    }
}
