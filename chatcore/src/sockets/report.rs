//! What a broadcast (or a forward to a remote tier) achieved.

/// How a delivery went: sessions that got the payload and sessions that did not.
///
/// ```
/// use chatcore::sockets::DeliveryReport;
/// let report = DeliveryReport { delivered: 2, failed: 0 };
/// assert!(report.is_complete());
/// assert!(!DeliveryReport { delivered: 1, failed: 1 }.is_complete());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryReport {
    /// Sessions the payload was queued to.
    pub delivered: usize,
    /// Sessions that were dead or too slow.
    pub failed: usize,
}

impl DeliveryReport {
    /// True when no session failed (also when there were no sessions at all).
    pub fn is_complete(&self) -> bool {
        self.failed == 0
    }
}
