//! The outbox's rules: which row change is which event, what an event carries, and how a
//! delivery is retried — decided without I/O, so both stores and the dispatcher share them.
//!
//! Rule: an event is derived from the row change that caused it and written in the same
//! atomic write as that change, so no change is ever without its event nor an event
//! without its change. Its id is derived from the change (type, sandbox, time of the
//! change), so a write that is retried after a lost answer names the same event, and a
//! receiver de-duplicates on it. A delivery is retried with exponential backoff (1 s
//! doubling, at most an hour, with ±50 % jitter) until `WEBHOOK_RETRY_HOURS` after the
//! event, then marked failed and kept for the operators.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{EVENT_ID_PREFIX, EventType, event_body};
use crate::domain::time::EpochSecs;
use crate::domain::{Sandbox, SandboxStatus};

/// The longest wait between two attempts at one delivery.
pub const LONGEST_BACKOFF_SECS: i64 = 3600;

/// Which event a row change is, if any: `before` the status the row had (none: a row
/// the broker did not have, which no event announces), `after` the row as written;
/// `by_expiry` says an allocation was ended by auto-expiry rather than by its student.
pub fn sandbox_event(
    before: Option<SandboxStatus>,
    after: &Sandbox,
    by_expiry: bool,
) -> Option<EventType> {
    use SandboxStatus::{Allocated, Available, Deleted, DeletionFailed, PendingDeletion, Reserved};
    let before = before?;
    match (before, after.status) {
        (Available | Reserved, Allocated) => Some(EventType::SandboxAllocated),
        (Allocated, PendingDeletion) if by_expiry => Some(EventType::SandboxExpired),
        (Allocated, PendingDeletion) => Some(EventType::SandboxReleased),
        (before, Deleted) if before != Deleted => Some(EventType::SandboxDeleted),
        (before, DeletionFailed) if before != DeletionFailed => {
            Some(EventType::SandboxDeletionFailed)
        }
        _ => None,
    }
}

/// What a sandbox event carries: the row's public fields and its lab; never a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxEventData {
    /// The sandbox.
    pub sandbox_id: String,
    /// Its name.
    pub name: String,
    /// The provider's id.
    pub external_id: String,
    /// Its status after the change.
    pub status: SandboxStatus,
    /// The lab it is (or was) allocated for.
    pub track_name: Option<String>,
    /// The student holding it (or who held it).
    pub allocated_to_track: Option<String>,
    /// When it was allocated.
    pub allocated_at: Option<EpochSecs>,
    /// When its allocation ended.
    pub deletion_requested_at: Option<EpochSecs>,
    /// When the provider deleted it.
    pub deleted_at: Option<EpochSecs>,
}

impl SandboxEventData {
    /// The public fields of `row`.
    pub fn of(row: &Sandbox) -> Self {
        Self {
            sandbox_id: row.sandbox_id.clone(),
            name: row.name.clone(),
            external_id: row.external_id.clone(),
            status: row.status,
            track_name: row.lab.clone(),
            allocated_to_track: row.holder.clone(),
            allocated_at: row.allocated_at,
            deletion_requested_at: row.deletion_requested_at,
            deleted_at: row.deleted_at,
        }
    }
}

/// An event waiting to be fanned out to the endpoints that want it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Its id (`msg_…`): the deliveries' `webhook-id`, the same on every retry.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When.
    pub at: EpochSecs,
    /// The sandbox it is about, if any: a sandbox's events are delivered in order.
    #[serde(default)]
    pub subject: Option<String>,
    /// Its `data`.
    pub data: serde_json::Value,
}

impl OutboxEvent {
    /// The event `kind` about `row` as it was written at `at`; its id is derived from the
    /// three, so the same change always names the same event.
    pub fn about_sandbox(
        kind: EventType,
        row: &Sandbox,
        at: EpochSecs,
    ) -> Result<Self, serde_json::Error> {
        let digest = Sha256::digest(format!("{}|{}|{}", kind.as_str(), row.sandbox_id, at.get()));
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            id: format!("{EVENT_ID_PREFIX}{hex}"),
            kind,
            at,
            subject: Some(row.sandbox_id.clone()),
            data: serde_json::to_value(SandboxEventData::of(row))?,
        })
    }

    /// The body every delivery of it posts (the same bytes on every attempt).
    pub fn body(&self) -> Result<Vec<u8>, serde_json::Error> {
        event_body(self.kind, self.at, &self.data)
    }
}

/// One event on its way to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The endpoint.
    pub endpoint: String,
    /// The event.
    pub event: OutboxEvent,
    /// Attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_at: EpochSecs,
    /// What went wrong the last time.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When it was given up (`WEBHOOK_RETRY_HOURS` after the event): kept and shown,
    /// never tried again.
    #[serde(default)]
    pub failed_at: Option<EpochSecs>,
}

impl Delivery {
    /// The first delivery of `event` to `endpoint`, due at once.
    pub fn first(endpoint: &str, event: &OutboxEvent) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            event: event.clone(),
            attempts: 0,
            next_attempt_at: event.at,
            last_error: None,
            failed_at: None,
        }
    }

    /// Whether it is to be tried at `now`.
    pub fn due(&self, now: EpochSecs) -> bool {
        self.failed_at.is_none() && self.next_attempt_at <= now
    }
}

/// How long deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `WEBHOOK_RETRY_HOURS`, in seconds after the event.
    pub give_up_after_secs: i64,
}

impl RetryPolicy {
    /// The delivery after an attempt at `now` that failed with `error`; `jitter` (0 to 1)
    /// spreads the next attempt over ±50 % of the backoff, so a receiver back from an
    /// outage is not met by every retry at once.
    pub fn after_failure(
        &self,
        delivery: &Delivery,
        error: String,
        now: EpochSecs,
        jitter: f64,
    ) -> Delivery {
        let attempts = delivery.attempts.saturating_add(1);
        let backoff = 1_i64
            .checked_shl(attempts.saturating_sub(1).min(31))
            .unwrap_or(LONGEST_BACKOFF_SECS)
            .min(LONGEST_BACKOFF_SECS);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_precision_loss,
            reason = "a backoff of at most an hour, in whole seconds"
        )]
        let wait = ((backoff as f64) * (0.5 + jitter.clamp(0.0, 1.0))).round() as i64;
        let next = now + wait.max(1);
        let gives_up = next - delivery.event.at > self.give_up_after_secs;
        Delivery {
            attempts,
            next_attempt_at: next,
            last_error: Some(error),
            failed_at: gives_up.then_some(now),
            ..delivery.clone()
        }
    }
}

/// The order an endpoint's due deliveries are tried in: by event time, then id; and at
/// most the first of each sandbox's, so a later event about a sandbox never overtakes an
/// earlier one still being retried.
pub fn delivery_order(mut due: Vec<Delivery>) -> Vec<Delivery> {
    due.sort_by(|a, b| (a.event.at, &a.event.id).cmp(&(b.event.at, &b.event.id)));
    let mut seen = std::collections::HashSet::new();
    due.retain(|delivery| match &delivery.event.subject {
        Some(subject) => seen.insert(subject.clone()),
        None => true,
    });
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::tests::row;

    #[test]
    fn each_lifecycle_change_is_one_event() {
        use SandboxStatus::*;
        let after = |status| row(status, Some("stu"));
        let cases = [
            (
                Some(Available),
                after(Allocated),
                false,
                Some(EventType::SandboxAllocated),
            ),
            (
                Some(Reserved),
                after(Allocated),
                false,
                Some(EventType::SandboxAllocated),
            ),
            (
                Some(Allocated),
                after(PendingDeletion),
                false,
                Some(EventType::SandboxReleased),
            ),
            (
                Some(Allocated),
                after(PendingDeletion),
                true,
                Some(EventType::SandboxExpired),
            ),
            (
                Some(PendingDeletion),
                after(Deleted),
                false,
                Some(EventType::SandboxDeleted),
            ),
            (
                Some(PendingDeletion),
                after(DeletionFailed),
                false,
                Some(EventType::SandboxDeletionFailed),
            ),
            (Some(PendingDeletion), after(PendingDeletion), false, None),
            (Some(Deleted), after(Deleted), false, None),
            (Some(Available), after(Stale), false, None),
            (Some(Quarantined), after(PendingDeletion), false, None),
            (None, after(Allocated), false, None),
        ];
        for (before, after, by_expiry, expected) in cases {
            assert_eq!(
                sandbox_event(before, &after, by_expiry),
                expected,
                "{before:?} → {:?}",
                after.status
            );
        }
    }

    #[test]
    fn an_event_names_its_change_and_carries_no_token() {
        let mut allocated = row(SandboxStatus::Allocated, Some("stu"));
        allocated.token_id = Some("tok_secretish".into());
        allocated.lab = Some("dns".into());
        let at = EpochSecs::new(1_000);
        let event =
            OutboxEvent::about_sandbox(EventType::SandboxAllocated, &allocated, at).unwrap();
        let again =
            OutboxEvent::about_sandbox(EventType::SandboxAllocated, &allocated, at).unwrap();
        assert_eq!(event.id, again.id, "the same change, the same id");
        assert!(event.id.starts_with("msg_") && event.id.len() == 36);
        let released =
            OutboxEvent::about_sandbox(EventType::SandboxReleased, &allocated, at).unwrap();
        assert_ne!(event.id, released.id);
        let body = String::from_utf8(event.body().unwrap()).unwrap();
        assert!(
            body.starts_with(
                r#"{"type":"sandbox.allocated","timestamp":"1970-01-01T00:16:40Z","data":{"#
            ),
            "{body}"
        );
        assert!(
            body.contains(r#""track_name":"dns""#)
                && body.contains(r#""allocated_to_track":"stu""#)
        );
        assert!(!body.contains("tok_"), "never a token: {body}");
    }

    #[test]
    fn a_failed_delivery_backs_off_with_jitter_and_gives_up_after_the_retry_window() {
        let policy = RetryPolicy {
            give_up_after_secs: 24 * 3600,
        };
        let event = OutboxEvent::about_sandbox(
            EventType::SandboxAllocated,
            &row(SandboxStatus::Allocated, Some("stu")),
            EpochSecs::new(0),
        )
        .unwrap();
        let mut delivery = Delivery::first("wh_1", &event);
        assert!(delivery.due(EpochSecs::new(0)));
        let mut waits = Vec::new();
        let mut now = EpochSecs::new(0);
        for _ in 0..14 {
            delivery = policy.after_failure(&delivery, "HTTP 500".into(), now, 0.5);
            waits.push(delivery.next_attempt_at - now);
            now = delivery.next_attempt_at;
        }
        assert_eq!(&waits[..5], [1, 2, 4, 8, 16], "doubling (jitter centred)");
        assert_eq!(
            *waits.last().unwrap(),
            LONGEST_BACKOFF_SECS,
            "at most an hour"
        );
        assert_eq!(delivery.failed_at, None, "still inside the day");
        let low = policy.after_failure(&delivery, "x".into(), now, 0.0);
        let high = policy.after_failure(&delivery, "x".into(), now, 1.0);
        assert_eq!(
            (low.next_attempt_at - now, high.next_attempt_at - now),
            (1800, 5400)
        );
        let late = EpochSecs::new(24 * 3600 - 10);
        let given_up = policy.after_failure(&delivery, "timeout".into(), late, 0.5);
        assert_eq!(given_up.failed_at, Some(late));
        assert!(!given_up.due(late + 100_000), "never tried again");
        assert_eq!(given_up.last_error.as_deref(), Some("timeout"));
    }

    #[test]
    fn a_sandboxs_later_event_never_overtakes_an_earlier_one() {
        let event = |sandbox: &str, at: i64| {
            let mut row = row(SandboxStatus::Allocated, Some("stu"));
            row.sandbox_id = sandbox.into();
            OutboxEvent::about_sandbox(EventType::SandboxAllocated, &row, EpochSecs::new(at))
                .unwrap()
        };
        let due = vec![
            Delivery::first("wh_1", &event("b", 5)),
            Delivery::first("wh_1", &event("a", 9)),
            Delivery::first("wh_1", &event("a", 3)),
        ];
        let order: Vec<(String, i64)> = delivery_order(due)
            .iter()
            .map(|d| (d.event.subject.clone().unwrap(), d.event.at.get()))
            .collect();
        assert_eq!(order, [("a".to_owned(), 3), ("b".to_owned(), 5)]);
    }
}
