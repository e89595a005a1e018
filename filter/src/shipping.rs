//! Audit shipping from Envoy to the audit-sink: batches, acknowledgement, retry with backoff.
//!
//! Pure bookkeeping; the root context of the shim does the host calls. Events wait in Envoy's
//! shared queue; a batch taken from it stays here until the sink acknowledges it (the sink
//! answers only after a durable commit), so a sink outage delays events but loses none. The sink
//! ignores event ids it already holds, which makes a retried batch harmless.

/// Longest pause between two delivery attempts while the sink keeps failing.
pub const MAX_BACKOFF_MS: u64 = 2_000;

/// A batch on its way to the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// NDJSON body: one event a line.
    pub body: Vec<u8>,
    pub events: usize,
    pub attempts: u32,
}

/// Delivery state of one root context.
#[derive(Debug, Default)]
pub struct AuditShipper {
    batch: Option<Batch>,
    /// An event taken from the queue that did not fit in the last batch: first in the next.
    carry: Option<Vec<u8>>,
    in_flight: Option<u32>,
    not_before_ms: u64,
    failures_in_a_row: u32,
}

impl AuditShipper {
    /// The batch to send now, if any: the unacknowledged one first, otherwise a new one filled
    /// from `dequeue` with at most `max_batch` events and about `max_bytes` bytes (an event larger
    /// than that travels alone). `None` while a batch is in flight or a retry is backing off.
    pub fn next_batch(
        &mut self,
        now_ms: u64,
        max_batch: usize,
        max_bytes: usize,
        mut dequeue: impl FnMut() -> Option<Vec<u8>>,
    ) -> Option<&Batch> {
        if self.in_flight.is_some() || now_ms < self.not_before_ms {
            return None;
        }
        if self.batch.is_none() {
            let mut body = Vec::new();
            let mut events = 0;
            while events < max_batch {
                let Some(event) = self.carry.take().or_else(&mut dequeue) else {
                    break;
                };
                if events > 0 && body.len() + event.len() + 1 > max_bytes {
                    self.carry = Some(event);
                    break;
                }
                body.extend_from_slice(&event);
                if !event.ends_with(b"\n") {
                    body.push(b'\n');
                }
                events += 1;
            }
            if events == 0 {
                return None;
            }
            self.batch = Some(Batch {
                body,
                events,
                attempts: 0,
            });
        }
        self.batch.as_ref()
    }

    /// The current batch was handed to the host with this call token.
    pub fn sent(&mut self, token: u32) {
        self.in_flight = Some(token);
        if let Some(batch) = &mut self.batch {
            batch.attempts += 1;
        }
    }

    /// Whether `token` is the delivery this shipper waits for.
    pub fn owns(&self, token: u32) -> bool {
        self.in_flight == Some(token)
    }

    /// The sink answered (`acknowledged`) or the delivery failed. Returns the number of events
    /// now known to be stored.
    pub fn finished(&mut self, acknowledged: bool, now_ms: u64) -> usize {
        self.in_flight = None;
        if acknowledged {
            self.failures_in_a_row = 0;
            self.not_before_ms = 0;
            return self.batch.take().map_or(0, |b| b.events);
        }
        self.delivery_failed(now_ms);
        0
    }

    /// Takes line `line` (1-based, as the sink counts in a `badLine` refusal) out of the
    /// unacknowledged batch, which is then sent again at once: an event the sink will never take
    /// as it is must not hold back every event behind it (and, with the backlog bound, every
    /// call). The line, when the batch had it, for the caller to log in full.
    pub fn set_aside(&mut self, line: usize) -> Option<Vec<u8>> {
        let batch = self.batch.as_mut()?;
        let mut lines: Vec<&[u8]> = batch
            .body
            .split(|&byte| byte == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let index = line.checked_sub(1).filter(|i| *i < lines.len())?;
        let removed = lines.remove(index).to_vec();
        let mut body = Vec::with_capacity(batch.body.len());
        for kept in &lines {
            body.extend_from_slice(kept);
            body.push(b'\n');
        }
        batch.events = lines.len();
        batch.body = body;
        if batch.events == 0 {
            self.batch = None;
        }
        self.in_flight = None;
        self.not_before_ms = 0;
        Some(removed)
    }

    /// The host refused to start the delivery (e.g. unknown cluster): back off and retry.
    pub fn delivery_failed(&mut self, now_ms: u64) {
        self.in_flight = None;
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        let exponent = self.failures_in_a_row.min(6);
        let backoff = (50u64 << exponent).min(MAX_BACKOFF_MS);
        self.not_before_ms = now_ms.saturating_add(backoff);
    }

    /// Events in the unacknowledged batch.
    pub fn batch_events(&self) -> usize {
        self.batch.as_ref().map_or(0, |b| b.events)
    }

    /// Events taken from the queue and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.batch.as_ref().map_or(0, |b| b.events) + usize::from(self.carry.is_some())
    }

    /// Hands back every event taken from the queue and not acknowledged, one line each, so a
    /// root context that goes away (config reload, drain) can put them back on the queue.
    pub fn take_unacknowledged(&mut self) -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = self
            .batch
            .take()
            .map(|b| {
                b.body
                    .split(|&byte| byte == b'\n')
                    .filter(|line| !line.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect()
            })
            .unwrap_or_default();
        lines.extend(self.carry.take());
        self.in_flight = None;
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_line_is_set_aside_and_the_rest_goes_again_at_once() {
        let mut shipper = AuditShipper::default();
        let mut queue: Vec<Vec<u8>> = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        queue.reverse();
        let batch = shipper.next_batch(0, 10, 1 << 20, || queue.pop()).unwrap();
        assert_eq!(batch.events, 3);
        shipper.sent(1);
        assert_eq!(shipper.finished(false, 0), 0);
        assert_eq!(shipper.set_aside(2), Some(b"b".to_vec()));
        let again = shipper.next_batch(0, 10, 1 << 20, || None).unwrap();
        assert_eq!((again.body.as_slice(), again.events), (&b"a\nc\n"[..], 2));
        assert_eq!(shipper.set_aside(3), None, "no such line");
        assert_eq!(shipper.set_aside(0), None);
        shipper.set_aside(1);
        shipper.set_aside(1);
        assert!(
            shipper.next_batch(0, 10, 1 << 20, || None).is_none(),
            "nothing left"
        );
    }
    use std::collections::VecDeque;

    fn queue(n: usize) -> VecDeque<Vec<u8>> {
        (0..n)
            .map(|i| format!("{{\"n\":{i}}}").into_bytes())
            .collect()
    }

    #[test]
    fn batches_are_bounded_and_newline_delimited() {
        let mut q = queue(5);
        let mut shipper = AuditShipper::default();
        let batch = shipper
            .next_batch(0, 3, usize::MAX, || q.pop_front())
            .unwrap()
            .clone();
        assert_eq!(batch.events, 3);
        assert_eq!(batch.body, b"{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
        shipper.sent(7);
        assert!(
            shipper
                .next_batch(0, 3, usize::MAX, || q.pop_front())
                .is_none(),
            "one in flight"
        );
        assert_eq!(shipper.finished(true, 0), 3);
        let batch = shipper
            .next_batch(0, 3, usize::MAX, || q.pop_front())
            .unwrap();
        assert_eq!(batch.events, 2);
    }

    #[test]
    fn failed_batch_is_retried_unchanged_after_backoff() {
        let mut q = queue(2);
        let mut shipper = AuditShipper::default();
        let first = shipper
            .next_batch(0, 10, usize::MAX, || q.pop_front())
            .unwrap()
            .clone();
        shipper.sent(1);
        assert_eq!(shipper.finished(false, 1_000), 0);
        assert!(
            shipper
                .next_batch(1_000, 10, usize::MAX, || q.pop_front())
                .is_none(),
            "backing off"
        );
        q.push_back(b"{\"late\":true}".to_vec());
        let again = shipper
            .next_batch(1_000 + MAX_BACKOFF_MS, 10, usize::MAX, || q.pop_front())
            .unwrap();
        assert_eq!(again.body, first.body, "same events, none added or lost");
        assert_eq!(shipper.unacknowledged(), 2);
        shipper.sent(2);
        assert!(shipper.owns(2) && !shipper.owns(1));
        assert_eq!(shipper.finished(true, 5_000), 2);
        let next = shipper
            .next_batch(5_000, 10, usize::MAX, || q.pop_front())
            .unwrap();
        assert_eq!(next.body, b"{\"late\":true}\n");
    }

    #[test]
    fn batches_are_bounded_in_bytes_without_losing_the_event_that_did_not_fit() {
        let mut q: VecDeque<Vec<u8>> = [vec![b'a'; 40], vec![b'b'; 40], vec![b'c'; 100]].into();
        let mut shipper = AuditShipper::default();
        let first = shipper
            .next_batch(0, 10, 90, || q.pop_front())
            .unwrap()
            .clone();
        assert_eq!(first.events, 2);
        shipper.sent(1);
        shipper.finished(true, 0);
        let second = shipper.next_batch(0, 10, 90, || q.pop_front()).unwrap();
        assert_eq!(
            second.events, 1,
            "an event over the byte bound travels alone"
        );
        assert_eq!(second.body.len(), 101);
    }

    #[test]
    fn unacknowledged_events_can_be_handed_back() {
        let mut q = queue(3);
        let mut shipper = AuditShipper::default();
        shipper.next_batch(0, 2, usize::MAX, || q.pop_front());
        shipper.sent(4);
        let lines = shipper.take_unacknowledged();
        assert_eq!(lines, vec![b"{\"n\":0}".to_vec(), b"{\"n\":1}".to_vec()]);
        assert_eq!(shipper.unacknowledged(), 0);
        assert!(!shipper.owns(4));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut shipper = AuditShipper::default();
        for _ in 0..20 {
            shipper.delivery_failed(0);
        }
        assert_eq!(shipper.not_before_ms, MAX_BACKOFF_MS);
    }
}
