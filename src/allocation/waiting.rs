//! Waiting instead of 409 (`Prefer: wait=N`, docs/api.md): a bounded FIFO per name prefix
//! of requests that found nothing available and asked to wait.
//!
//! Rule: only the request at the head of its prefix's queue tries again, so sandboxes
//! that appear go to waiters in arrival order. Heads try again when this instance learns
//! the pool grew (a sync it ran added sandboxes) and at least every [`RETRY_EVERY`] (another
//! instance's sync or an import shows only in the store). A waiter leaves the queue when it
//! is served, when its time is up, or when its request goes away.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// The longest a request may ask to wait (`Prefer: wait=N` is capped at it).
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often a head of queue tries again without being told the pool grew.
pub const RETRY_EVERY: Duration = Duration::from_millis(500);

/// The queues of one instance.
pub struct WaitingRoom {
    limit: usize,
    queues: Mutex<HashMap<String, VecDeque<u64>>>,
    waiting: AtomicUsize,
    next_ticket: AtomicU64,
    changed: Notify,
}

/// A request's place in its prefix's queue; leaving (dropping it) lets the next one on.
pub struct Ticket {
    room: Arc<WaitingRoom>,
    prefix: String,
    number: u64,
}

impl WaitingRoom {
    /// Room for `limit` waiting requests at most, across every prefix.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            queues: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
            next_ticket: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    /// A place at the back of `prefix`'s queue, or `None` when the room is full.
    pub fn enter(self: &Arc<Self>, prefix: &str) -> Option<Ticket> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if self.waiting.load(Ordering::Relaxed) >= self.limit {
            return None;
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let number = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        queues
            .entry(prefix.to_owned())
            .or_default()
            .push_back(number);
        Some(Ticket {
            room: Arc::clone(self),
            prefix: prefix.to_owned(),
            number,
        })
    }

    /// Requests waiting now, across every prefix.
    pub fn depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Tells every head of queue to try again: the pool may have grown.
    pub fn pool_grew(&self) {
        self.changed.notify_waiters();
    }
}

impl Ticket {
    /// Whether this request is first in its queue (the one to try next).
    pub fn is_first(&self) -> bool {
        let queues = self
            .room
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        queues
            .get(&self.prefix)
            .and_then(VecDeque::front)
            .is_some_and(|first| *first == self.number)
    }

    /// Waits until the pool may have grown, or [`RETRY_EVERY`] at most.
    pub async fn next_chance(&self) {
        let told = self.room.changed.notified();
        let _ = tokio::time::timeout(RETRY_EVERY, told).await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        {
            let mut queues = self
                .room
                .queues
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(queue) = queues.get_mut(&self.prefix) {
                queue.retain(|number| *number != self.number);
                if queue.is_empty() {
                    queues.remove(&self.prefix);
                }
            }
        }
        self.room.waiting.fetch_sub(1, Ordering::Relaxed);
        // The next in line may go now.
        self.room.changed.notify_waiters();
    }
}

/// The wait a `Prefer` header asks for (RFC 7240: `wait=N` among comma-separated
/// preferences), capped at [`MAX_WAIT`]; `None` without one or when it does not parse (an
/// unknown or malformed preference is ignored, as the RFC says).
pub fn requested_wait(prefer: &str) -> Option<Duration> {
    prefer
        .split([',', ';'])
        .map(str::trim)
        .find_map(|preference| {
            let (name, value) = preference.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("wait")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
        .filter(|seconds| *seconds > 0)
        .map(|seconds| Duration::from_secs(seconds).min(MAX_WAIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_preference_is_read_capped_and_otherwise_ignored() {
        assert_eq!(requested_wait("wait=10"), Some(Duration::from_secs(10)));
        assert_eq!(
            requested_wait("respond-async, WAIT = 5"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(requested_wait("wait=600"), Some(MAX_WAIT));
        for ignored in ["", "wait", "wait=soon", "wait=0", "return=minimal"] {
            assert_eq!(requested_wait(ignored), None, "{ignored:?}");
        }
    }

    #[test]
    fn the_queue_is_first_come_first_served_per_prefix_and_bounded() {
        let room = WaitingRoom::new(3);
        let first = room.enter("lab-").unwrap();
        let second = room.enter("lab-").unwrap();
        let other = room.enter("aws-").unwrap();
        assert!(room.enter("lab-").is_none(), "full");
        assert!(first.is_first() && !second.is_first() && other.is_first());
        drop(first);
        assert!(second.is_first());
        assert_eq!(room.depth(), 2);
        drop((second, other));
        assert_eq!(room.depth(), 0);
    }
}
