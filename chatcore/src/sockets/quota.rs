//! A cap on the websockets one user holds open in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Caps the websockets one user may hold open in this process, across tiers. Cheap to clone;
/// clones share the counts.
///
/// ```
/// use chatcore::sockets::SocketQuota;
/// let quota = SocketQuota::new(Some(1));
/// let first = quota.acquire("alice").expect("under the cap");
/// assert!(quota.acquire("alice").is_none());
/// drop(first);
/// assert!(quota.acquire("alice").is_some());
/// ```
#[derive(Debug, Clone, Default)]
pub struct SocketQuota {
    limit: Option<usize>,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl SocketQuota {
    /// At most `limit` sockets per user; `None` means no cap.
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            open: Arc::default(),
        }
    }

    /// The cap.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Takes one of `user_id`'s slots until the guard is dropped; `None` when they are all
    /// taken.
    pub fn acquire(&self, user_id: &str) -> Option<QuotaGuard> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(user_id.to_owned()).or_default();
        if self.limit.is_some_and(|limit| *count >= limit) {
            return None;
        }
        *count += 1;
        Some(QuotaGuard {
            quota: self.clone(),
            user_id: user_id.to_owned(),
        })
    }

    /// Sockets `user_id` holds now.
    pub fn open(&self, user_id: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(user_id).copied().unwrap_or(0)
    }

    fn release(&self, user_id: &str) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(user_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(user_id);
            }
        }
    }
}

/// One socket's slot in a [`SocketQuota`], given back on drop.
#[derive(Debug)]
pub struct QuotaGuard {
    quota: SocketQuota,
    user_id: String,
}

impl Drop for QuotaGuard {
    fn drop(&mut self) {
        self.quota.release(&self.user_id);
    }
}
