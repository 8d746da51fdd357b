//! The bounded latest-frame queue between the ingest task and the worker thread.
//!
//! Ingest never waits: pushing onto a full queue drops the oldest frame and returns it so
//! the caller counts it. The worker blocks on [`LatestQueue::pop`] until a frame arrives
//! or the queue is closed.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

struct Inner<T> {
    items: VecDeque<T>,
    capacity: usize,
    closed: bool,
}

/// A bounded FIFO that drops its oldest item when full.
pub struct LatestQueue<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
}

impl<T> LatestQueue<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        LatestQueue {
            inner: Mutex::new(Inner {
                items: VecDeque::with_capacity(capacity.max(1)),
                capacity: capacity.max(1),
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // A panic while holding the lock cannot leave the deque inconsistent (every
        // operation is a single push/pop), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pushes an item; returns the items dropped to make room (oldest first), or the item
    /// itself when the queue is closed.
    pub fn push(&self, item: T) -> Vec<T> {
        let mut g = self.lock();
        if g.closed {
            return vec![item];
        }
        let mut dropped = Vec::new();
        while g.items.len() >= g.capacity {
            if let Some(old) = g.items.pop_front() {
                dropped.push(old);
            }
        }
        g.items.push_back(item);
        drop(g);
        self.ready.notify_one();
        dropped
    }

    /// Waits for the next item; None once the queue is closed.
    pub fn pop(&self) -> Option<T> {
        let mut g = self.lock();
        loop {
            if g.closed {
                return None;
            }
            if let Some(item) = g.items.pop_front() {
                return Some(item);
            }
            g = self.ready.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes the capacity; returns the items dropped to fit it (oldest first).
    pub fn set_capacity(&self, capacity: usize) -> Vec<T> {
        let mut g = self.lock();
        g.capacity = capacity.max(1);
        let excess = g.items.len().saturating_sub(g.capacity);
        g.items.drain(..excess).collect()
    }

    /// Closes the queue: wakes the worker and returns the items it will not get.
    pub fn close(&self) -> Vec<T> {
        let mut g = self.lock();
        g.closed = true;
        let left = g.items.drain(..).collect();
        drop(g);
        self.ready.notify_all();
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn drops_oldest_and_closes() {
        let q = LatestQueue::new(2);
        assert!(q.push(1).is_empty());
        assert!(q.push(2).is_empty());
        assert_eq!(q.push(3), vec![1]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.set_capacity(1), Vec::<i32>::new());
        assert_eq!(q.push(4), vec![3]);
        assert_eq!(q.close(), vec![4]);
        assert_eq!(q.pop(), None);
        assert_eq!(q.push(5), vec![5]);
    }

    #[test]
    fn close_wakes_a_waiting_worker() {
        let q = Arc::new(LatestQueue::<u32>::new(1));
        let q2 = q.clone();
        let worker = std::thread::spawn(move || q2.pop());
        std::thread::sleep(std::time::Duration::from_millis(20));
        q.close();
        assert_eq!(worker.join().unwrap(), None);
    }
}
