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
    /// The public fields of `row` as the event `kind` at `at` saw it: the status the event
    /// announces, and no time after `at` (a store that reads the row later, after further
    /// changes, still tells the event's moment).
    pub fn as_of(row: &Sandbox, kind: EventType, at: EpochSecs) -> Self {
        let by_then = |time: Option<EpochSecs>| time.filter(|t| *t <= at);
        Self {
            sandbox_id: row.sandbox_id.clone(),
            name: row.name.clone(),
            external_id: row.external_id.clone(),
            status: announced_status(kind).unwrap_or(row.status),
            track_name: row.lab.clone(),
            allocated_to_track: row.holder.clone(),
            allocated_at: by_then(row.allocated_at),
            deletion_requested_at: by_then(row.deletion_requested_at),
            deleted_at: by_then(row.deleted_at),
        }
    }
}

/// The status a sandbox event announces.
fn announced_status(kind: EventType) -> Option<SandboxStatus> {
    match kind {
        EventType::SandboxAllocated => Some(SandboxStatus::Allocated),
        EventType::SandboxReleased | EventType::SandboxExpired => {
            Some(SandboxStatus::PendingDeletion)
        }
        EventType::SandboxDeleted => Some(SandboxStatus::Deleted),
        EventType::SandboxDeletionFailed => Some(SandboxStatus::DeletionFailed),
        _ => None,
    }
}

/// An event a row change announces, as the change's own write records it: what and when,
/// not yet the data (a store whose write does not read the row fills that in when the
/// event is fanned out, from the row it reads then: [`SandboxEventData::as_of`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announced {
    /// The event's id (see [`event_id`]).
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When.
    pub at: EpochSecs,
    /// The sandbox.
    pub sandbox_id: String,
}

impl Announced {
    /// The whole event, its data from `row` (the sandbox as read; `None`: gone by now).
    pub fn event(&self, row: Option<&Sandbox>) -> Result<OutboxEvent, serde_json::Error> {
        let data = match row {
            Some(row) => serde_json::to_value(SandboxEventData::as_of(row, self.kind, self.at))?,
            None => serde_json::json!({"sandbox_id": self.sandbox_id}),
        };
        Ok(OutboxEvent {
            id: self.id.clone(),
            kind: self.kind,
            at: self.at,
            subject: Some(self.sandbox_id.clone()),
            data,
        })
    }
}

/// What an outbox holds: a sandbox change's announcement (its data read at fan-out), or
/// an event complete already (a job, the auditor, the pool, the provider).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Pending {
    /// A whole event.
    Event(OutboxEvent),
    /// A sandbox change's event.
    Sandbox(Announced),
}

impl Pending {
    /// Its time.
    pub fn at(&self) -> EpochSecs {
        match self {
            Self::Event(event) => event.at,
            Self::Sandbox(announced) => announced.at,
        }
    }

    /// Its type.
    pub fn kind(&self) -> EventType {
        match self {
            Self::Event(event) => event.kind,
            Self::Sandbox(announced) => announced.kind,
        }
    }

    /// The whole event; a sandbox's data from `row` (see [`Announced::event`]).
    pub fn event(&self, row: Option<&Sandbox>) -> Result<OutboxEvent, serde_json::Error> {
        match self {
            Self::Event(event) => Ok(event.clone()),
            Self::Sandbox(announced) => announced.event(row),
        }
    }

    /// The sandbox whose row holds its data, for a sandbox change's event.
    pub fn sandbox_id(&self) -> Option<&str> {
        match self {
            Self::Event(_) => None,
            Self::Sandbox(announced) => Some(&announced.sandbox_id),
        }
    }
}

impl OutboxEvent {
    /// An event of `kind` at `at` about no sandbox, with `data`; its id from the three, so
    /// announcing the same thing twice names one event.
    pub fn other(kind: EventType, at: EpochSecs, data: serde_json::Value) -> Self {
        let digest = Sha256::digest(format!("{}|{}|{data}", kind.as_str(), at.get()));
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Self {
            id: format!("{EVENT_ID_PREFIX}{hex}"),
            kind,
            at,
            subject: None,
            data,
        }
    }
}

/// The events a job run's outcome announces: `job.failed` when it failed; for the jobs
/// that call the provider (`provider_job`), `provider.unavailable` when a run is postponed
/// after one that was not, and `provider.recovered` when one completes after a postponed
/// one. Outcomes are the job records' (`completed`, `postponed`, `refused`, `failed`).
pub fn job_events(
    job: &str,
    provider_job: bool,
    previous: Option<&str>,
    outcome: &str,
    error: Option<&str>,
    at: EpochSecs,
) -> Vec<OutboxEvent> {
    let mut events = Vec::new();
    if outcome == "failed" {
        events.push(OutboxEvent::other(
            EventType::JobFailed,
            at,
            serde_json::json!({"job": job, "error": error}),
        ));
    }
    if provider_job {
        let was_postponed = previous == Some("postponed");
        let kind = match outcome {
            "postponed" if !was_postponed => Some(EventType::ProviderUnavailable),
            "completed" if was_postponed => Some(EventType::ProviderRecovered),
            _ => None,
        };
        events
            .extend(kind.map(|kind| OutboxEvent::other(kind, at, serde_json::json!({"job": job}))));
    }
    events
}

/// The `audit.violation` event an audit announces: when it found something, and not the
/// same counts the audit before it found (an operator hears of a new finding once).
pub fn audit_event(
    previous: Option<&crate::domain::audit::AuditReport>,
    report: &crate::domain::audit::AuditReport,
) -> Option<OutboxEvent> {
    let total: u64 = report.counts.values().sum();
    let unchanged = previous.is_some_and(|previous| previous.counts == report.counts);
    (total > 0 && !unchanged).then(|| {
        let examples: Vec<serde_json::Value> = report
            .violations
            .iter()
            .take(10)
            .map(|v| serde_json::json!({"check": v.check.as_str(), "sandbox_id": v.sandbox_id, "detail": v.detail}))
            .collect();
        OutboxEvent::other(
            EventType::AuditViolation,
            report.checked_at,
            serde_json::json!({"counts": report.counts, "total": total, "examples": examples}),
        )
    })
}

/// How a watched name prefix stands against its low watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolLevel {
    /// At or above its mark.
    Fine,
    /// Below its mark.
    Low,
    /// Nothing available.
    Empty,
}

impl PoolLevel {
    /// Where `available` stands against `watermark`.
    pub fn of(available: u64, watermark: u64) -> Self {
        if available == 0 {
            Self::Empty
        } else if available < watermark {
            Self::Low
        } else {
            Self::Fine
        }
    }
}

/// The event a prefix going from `before` to `now` announces: `pool.low` when it falls
/// below its mark, `pool.empty` when it runs out; nothing when it recovers or stays.
pub fn pool_event(
    prefix: &str,
    before: PoolLevel,
    now: PoolLevel,
    available: u64,
    watermark: u64,
    at: EpochSecs,
) -> Option<OutboxEvent> {
    let kind = match (before, now) {
        (PoolLevel::Fine, PoolLevel::Low) => EventType::PoolLow,
        (PoolLevel::Fine | PoolLevel::Low, PoolLevel::Empty) => EventType::PoolEmpty,
        _ => return None,
    };
    Some(OutboxEvent::other(
        kind,
        at,
        serde_json::json!({"name_prefix": prefix, "available": available, "watermark": watermark}),
    ))
}

/// The event a decided change announces, if any: `before` is the row the change applies
/// to (as read, or as a write that does not read it must assume it — its status is right
/// either way), the change's own time is the event's.
pub fn announced(before: &Sandbox, change: &crate::domain::lifecycle::Change) -> Option<Announced> {
    announce(before.status, &change.row, change.by_expiry)
}

/// The event a row going from `before` to `after` announces (see [`sandbox_event`]).
pub fn announce(before: SandboxStatus, after: &Sandbox, by_expiry: bool) -> Option<Announced> {
    let kind = sandbox_event(Some(before), after, by_expiry)?;
    let at = after.updated_at;
    Some(Announced {
        id: event_id(kind, &after.sandbox_id, at),
        kind,
        at,
        sandbox_id: after.sandbox_id.clone(),
    })
}

/// An event's id, derived from what and when, so the same change always names the same
/// event (a write retried after a lost answer, a fan-out run twice).
pub fn event_id(kind: EventType, sandbox_id: &str, at: EpochSecs) -> String {
    let digest = Sha256::digest(format!("{}|{sandbox_id}|{}", kind.as_str(), at.get()));
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{EVENT_ID_PREFIX}{hex}")
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
        Announced {
            id: event_id(kind, &row.sandbox_id, at),
            kind,
            at,
            sandbox_id: row.sandbox_id.clone(),
        }
        .event(Some(row))
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
    /// Its place among the endpoint's deliveries of events in the same second: given at
    /// fan-out, increasing (a fan-out's time in milliseconds × 1000 + the event's place in
    /// it), so a sandbox's events keep the order they were announced in.
    #[serde(default)]
    pub sequence: u64,
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
    /// The first delivery of `event` to `endpoint`, `sequence` its place (see
    /// [`Self::sequence`]), due at once.
    pub fn first(endpoint: &str, event: &OutboxEvent, sequence: u64) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            event: event.clone(),
            sequence,
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

/// The sequence of the `place`-th event a fan-out at `now_ms` moves (see
/// [`Delivery::sequence`]).
pub fn sequence(now_ms: crate::domain::time::EpochMillis, place: usize) -> u64 {
    u64::try_from(now_ms.get())
        .unwrap_or(0)
        .saturating_mul(1000)
        .saturating_add(u64::try_from(place).unwrap_or(u64::MAX) % 1000)
}

/// The order an endpoint's due deliveries are tried in: by event time, then sequence; and at
/// most the first of each sandbox's, so a later event about a sandbox never overtakes an
/// earlier one still being retried.
pub fn delivery_order(mut due: Vec<Delivery>) -> Vec<Delivery> {
    due.sort_by(|a, b| {
        (a.event.at, a.sequence, &a.event.id).cmp(&(b.event.at, b.sequence, &b.event.id))
    });
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
    fn a_change_announces_its_event_and_data_read_later_tells_its_moment() {
        use crate::domain::lifecycle;
        let mut allocated = row(SandboxStatus::Allocated, Some("stu"));
        allocated.allocated_at = Some(EpochSecs::new(100));
        let change = lifecycle::expire(
            &allocated,
            crate::domain::LabPolicy {
                lab_duration_hours: 1,
                grace_secs: 0,
            },
            EpochSecs::new(10_000),
        )
        .unwrap();
        let announced = announced(&allocated, &change).unwrap();
        assert_eq!(
            (announced.kind, announced.at),
            (EventType::SandboxExpired, EpochSecs::new(10_000))
        );
        assert_eq!(
            announced.id,
            event_id(
                EventType::SandboxExpired,
                &allocated.sandbox_id,
                EpochSecs::new(10_000)
            )
        );
        // Read again after it was deleted: the expired event still says pending deletion,
        // and nothing after its moment.
        let mut later = change.row;
        later.status = SandboxStatus::Deleted;
        later.deleted_at = Some(EpochSecs::new(20_000));
        let event = announced.event(Some(&later)).unwrap();
        assert_eq!(event.data["status"], "pending_deletion");
        assert_eq!(event.data["deleted_at"], serde_json::Value::Null);
        assert_eq!(event.data["deletion_requested_at"], 10_000);
        let gone = announced.event(None).unwrap();
        assert_eq!(
            gone.data,
            serde_json::json!({"sandbox_id": allocated.sandbox_id})
        );
    }

    #[test]
    fn an_outbox_keeps_either_kind_of_entry() {
        let announced = announce(
            SandboxStatus::Available,
            &row(SandboxStatus::Allocated, Some("stu")),
            false,
        )
        .unwrap();
        let other = OutboxEvent::other(
            EventType::JobFailed,
            EpochSecs::new(5),
            serde_json::json!({"job": "sync"}),
        );
        for pending in [Pending::Sandbox(announced), Pending::Event(other)] {
            let json = serde_json::to_string(&pending).unwrap();
            assert_eq!(
                serde_json::from_str::<Pending>(&json).unwrap(),
                pending,
                "{json}"
            );
        }
    }

    #[test]
    fn jobs_the_auditor_and_the_pool_announce_their_changes_once() {
        let at = EpochSecs::new(50);
        let kinds = |events: Vec<OutboxEvent>| events.iter().map(|e| e.kind).collect::<Vec<_>>();
        assert_eq!(
            kinds(job_events(
                "expiry",
                false,
                None,
                "failed",
                Some("store down"),
                at
            )),
            [EventType::JobFailed]
        );
        assert_eq!(
            kinds(job_events(
                "sync",
                true,
                Some("completed"),
                "postponed",
                None,
                at
            )),
            [EventType::ProviderUnavailable]
        );
        assert!(
            job_events("sync", true, Some("postponed"), "postponed", None, at).is_empty(),
            "once"
        );
        assert_eq!(
            kinds(job_events(
                "cleanup",
                true,
                Some("postponed"),
                "completed",
                None,
                at
            )),
            [EventType::ProviderRecovered]
        );
        assert!(job_events("sync", true, Some("completed"), "completed", None, at).is_empty());
        let failed = job_events("sync", true, None, "failed", Some("x"), at);
        assert_eq!(
            failed[0].data,
            serde_json::json!({"job": "sync", "error": "x"})
        );

        let report = |n: u64| crate::domain::audit::AuditReport {
            checked_at: at,
            duration_ms: 1,
            violations: Vec::new(),
            counts: [("deletion_overdue".to_owned(), n)].into_iter().collect(),
        };
        assert!(audit_event(None, &report(0)).is_none());
        assert_eq!(
            audit_event(None, &report(2)).map(|e| e.kind),
            Some(EventType::AuditViolation)
        );
        assert!(
            audit_event(Some(&report(2)), &report(2)).is_none(),
            "the same finding once"
        );
        assert!(audit_event(Some(&report(2)), &report(3)).is_some());

        use PoolLevel::{Empty, Fine, Low};
        assert_eq!(PoolLevel::of(0, 5), Empty);
        assert_eq!(PoolLevel::of(4, 5), Low);
        assert_eq!(PoolLevel::of(5, 5), Fine);
        let kind = |before, now| pool_event("lab-", before, now, 1, 5, at).map(|e| e.kind);
        assert_eq!(kind(Fine, Low), Some(EventType::PoolLow));
        assert_eq!(kind(Low, Empty), Some(EventType::PoolEmpty));
        assert_eq!(kind(Fine, Empty), Some(EventType::PoolEmpty));
        assert_eq!(kind(Low, Low), None);
        assert_eq!(kind(Empty, Fine), None, "recovering is not announced");
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
        let mut delivery = Delivery::first("wh_1", &event, 0);
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
            Delivery::first("wh_1", &event("b", 5), 1),
            Delivery::first("wh_1", &event("a", 9), 2),
            Delivery::first("wh_1", &event("a", 3), 3),
            // Announced in the same second as a's first, after it.
            Delivery::first("wh_1", &event("a", 3), 4),
        ];
        let order: Vec<(String, i64)> = delivery_order(due)
            .iter()
            .map(|d| (d.event.subject.clone().unwrap(), d.event.at.get()))
            .collect();
        assert_eq!(order, [("a".to_owned(), 3), ("b".to_owned(), 5)]);
    }
}
