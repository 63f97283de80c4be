//! Lifecycle transitions of a sandbox row, decided without I/O.
//!
//! Rule: a transition takes the row as read and its inputs, and returns the row it becomes
//! together with what must still hold of the stored row for that to apply ([`Expect`]).
//! The stores only persist the change and enforce the expectation: the embedded store
//! inside its write transaction, DynamoDB as the update's condition, with the `SET` and
//! `REMOVE` clauses derived from the difference between the two rows.

mod admin;
mod listing;
mod sync;

pub use self::admin::*;
pub use self::listing::*;
pub use self::sync::*;
use super::{ALLOCATED_BY_BROKER, HolderKey, LabPolicy, Sandbox, SandboxStatus};
use crate::domain::time::EpochSecs;

/// What must still hold of the stored row for a decided change to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The row is still in this status.
    pub status: SandboxStatus,
    /// And, when set, still held by this student.
    pub held_by: Option<String>,
    /// And, when set, its deletion still claimed by this runner.
    pub claimed_by: Option<String>,
    /// And, when set, still the allocation made at this time (epoch seconds; 0 as stored
    /// for a row never allocated).
    pub allocated_at: Option<EpochSecs>,
    /// And, when set, still set aside for this reservation.
    pub reserved_for: Option<String>,
}

impl Expect {
    /// Whether `row` still meets the expectation.
    pub fn holds_for(&self, row: &Sandbox) -> bool {
        let same = |expected: &Option<String>, actual: &Option<String>| {
            expected.is_none() || expected == actual
        };
        row.status == self.status
            && same(&self.held_by, &row.holder)
            && same(&self.claimed_by, &row.deletion_claimed_by)
            && self
                .allocated_at
                .is_none_or(|at| row.allocated_at.unwrap_or_default() == at)
            && same(&self.reserved_for, &row.reserved_for)
    }
}

/// A decided change: the row as it becomes, and what it requires of the stored one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The row after the change.
    pub row: Sandbox,
    /// What must still hold of the stored row.
    pub expect: Expect,
    /// The change is auto-expiry ending an allocation: announced as `sandbox.expired`,
    /// not `sandbox.released` (domain::webhooks::outbox).
    pub by_expiry: bool,
}

/// The row is not held by the student asking (docs/api.md: 403 `NOT_SANDBOX_OWNER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the sandbox is not held by this student")]
pub struct NotHolder;

/// What a student's release of a row comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The allocation ends now: the row goes to `pending_deletion`.
    Now(Box<Change>),
    /// The holder released it already: a repeat, answered with the row as it is.
    Repeat,
}

/// A release by `student` at `now`: only the holder may release; releasing a row that
/// is no longer `allocated` (already pending deletion, deleted, …) is a harmless repeat.
pub fn release(
    row: &Sandbox,
    holder: &HolderKey,
    token: Option<&str>,
    now: EpochSecs,
) -> Result<Release, NotHolder> {
    if !row.is_held_by(holder) || !row.allocated_under(token) {
        return Err(NotHolder);
    }
    if row.status != SandboxStatus::Allocated {
        return Ok(Release::Repeat);
    }
    Ok(Release::Now(Box::new(Change {
        by_expiry: false,
        row: allocation_ended(row, now),
        expect: Expect {
            status: SandboxStatus::Allocated,
            held_by: Some(holder.as_str().to_owned()),
            claimed_by: None,
            allocated_at: None,
            reserved_for: None,
        },
    })))
}

/// Auto-expiry of a row at `now`: an allocation whose lab and grace ended (see
/// [`LabPolicy::expired`]) ends as a release does, provided it is still the same
/// allocation — same holder, same start — when the change lands (its owner's own release,
/// or another instance's expiry, may come first).
pub fn expire(row: &Sandbox, policy: LabPolicy, now: EpochSecs) -> Option<Change> {
    policy.expired(row, now).then(|| Change {
        by_expiry: true,
        row: allocation_ended(row, now),
        expect: Expect {
            status: SandboxStatus::Allocated,
            held_by: Some(row.holder.clone().unwrap_or_default()),
            claimed_by: None,
            allocated_at: Some(row.allocated_at.unwrap_or_default()),
            reserved_for: None,
        },
    })
}

/// What an allocation grants: who takes a row, under which stored idempotency key, for
/// which lab, from when and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// The student who takes the row.
    pub holder: &'a str,
    /// The `idempotency_key` stored with it (the holder key when the request had none).
    pub idempotency_key: &'a str,
    /// The lab (`X-Track-Name`), if given; without one any earlier track is cleared.
    pub lab: Option<&'a str>,
    /// How long the lab lasts.
    pub lab_duration_hours: u32,
    /// When.
    pub now: EpochSecs,
    /// The lab token it is made under, if one.
    pub token_id: Option<&'a str>,
    /// The reservation it draws on, if one: its rows are candidates too.
    pub reservation: Option<&'a str>,
}

/// Allocating a candidate: an available row — or one set aside for the reservation the
/// grant draws on — becomes the grant's, provided it is still so when the change lands (a
/// racing allocation may take it first). Any other row is no candidate (`None`). A row
/// drawn from a reservation keeps `reserved_for`, so the reservation counts it as used.
pub fn allocate(row: &Sandbox, grant: &Grant<'_>) -> Option<Change> {
    let drawn = match row.status {
        SandboxStatus::Available => false,
        SandboxStatus::Reserved
            if row.reserved_for.is_some() && row.reserved_for.as_deref() == grant.reservation =>
        {
            true
        }
        _ => return None,
    };
    let mut taken = row.clone();
    taken.status = SandboxStatus::Allocated;
    taken.holder = Some(grant.holder.to_owned());
    taken.idempotency_key = Some(grant.idempotency_key.to_owned());
    taken.lab = grant.lab.map(str::to_owned);
    taken.allocated_at = Some(grant.now);
    taken.lab_duration_hours = Some(grant.lab_duration_hours);
    taken.allocated_by = Some(ALLOCATED_BY_BROKER.to_owned());
    taken.token_id = grant.token_id.map(str::to_owned);
    taken.reserved_for = if drawn {
        row.reserved_for.clone()
    } else {
        None
    };
    taken.updated_at = grant.now;
    Some(Change {
        by_expiry: false,
        expect: Expect {
            status: row.status,
            held_by: None,
            claimed_by: None,
            allocated_at: None,
            reserved_for: drawn.then(|| row.reserved_for.clone()).flatten(),
        },
        row: taken,
    })
}

/// Setting an available row aside for `reservation`, provided it is still available when
/// the change lands; any other row is left alone (`None`).
pub fn reserve(row: &Sandbox, reservation: &str, now: EpochSecs) -> Option<Change> {
    (row.status == SandboxStatus::Available).then(|| {
        let mut held = row.clone();
        held.status = SandboxStatus::Reserved;
        held.reserved_for = Some(reservation.to_owned());
        held.updated_at = now;
        Change {
            by_expiry: false,
            row: held,
            expect: sync::while_still(SandboxStatus::Available),
        }
    })
}

/// Returning a row set aside for `reservation` to the pool, provided it is still set
/// aside for it when the change lands (an allocation may draw on it first); any other row
/// is left alone (`None`).
pub fn unreserve(row: &Sandbox, reservation: &str, now: EpochSecs) -> Option<Change> {
    (row.status == SandboxStatus::Reserved && row.reserved_for.as_deref() == Some(reservation))
        .then(|| {
            let mut back = row.clone();
            back.status = SandboxStatus::Available;
            back.reserved_for = None;
            back.updated_at = now;
            Change {
                by_expiry: false,
                row: back,
                expect: Expect {
                    reserved_for: Some(reservation.to_owned()),
                    ..sync::while_still(SandboxStatus::Reserved)
                },
            }
        })
}

/// The row an allocation leaves when it ends (released or expired): pending deletion
/// since `now`.
fn allocation_ended(row: &Sandbox, now: EpochSecs) -> Sandbox {
    let mut ended = row.clone();
    ended.status = SandboxStatus::PendingDeletion;
    ended.deletion_requested_at = Some(now);
    ended.updated_at = now;
    ended
}

/// The DynamoDB condition of a deletion claim (`:pending` the status, `:me` the runner,
/// `:now` the time): exactly what [`deletion_claimable`] says.
pub const DELETION_CLAIM_CONDITION: &str = "#s = :pending AND (attribute_not_exists(deletion_claimed_by) \
     OR deletion_claimed_by = :me OR deletion_claimed_until < :now)";

/// Whether `runner` may claim `row`'s deletion at `now`: it is pending deletion, and
/// unclaimed, already the runner's, or claimed by a runner whose claim ran out (a claim
/// still holds at its last second, `deletion_claimed_until == now`).
pub fn deletion_claimable(row: &Sandbox, runner: &str, now: EpochSecs) -> bool {
    let claimed_elsewhere = row
        .deletion_claimed_by
        .as_deref()
        .is_some_and(|by| by != runner)
        && row.deletion_claimed_until.is_some_and(|until| until >= now);
    row.status == SandboxStatus::PendingDeletion && !claimed_elsewhere
}

/// `row` claimed for `runner` until `until`, if [`deletion_claimable`] lets `runner` claim
/// it at `now`: the write a claim makes (DynamoDB sets the same two attributes under
/// [`DELETION_CLAIM_CONDITION`]).
pub fn claim_deletion(
    row: &Sandbox,
    runner: &str,
    now: EpochSecs,
    until: EpochSecs,
) -> Option<Sandbox> {
    deletion_claimable(row, runner, now).then(|| {
        let mut claimed = row.clone();
        claimed.deletion_claimed_by = Some(runner.to_owned());
        claimed.deletion_claimed_until = Some(until);
        claimed
    })
}

/// Whether a tombstone may be dropped at `now`: `deleted`, and its `ttl` reached (a
/// tombstone is dropped at its `ttl`, inclusive). DynamoDB's delete repeats both as its
/// condition (`status = deleted AND ttl <= now`), so a row changed since it was read stays.
pub fn tombstone_purgeable(row: &Sandbox, now: EpochSecs) -> bool {
    row.status == SandboxStatus::Deleted && row.ttl.is_some_and(|ttl| ttl <= now)
}

/// Whether a row is due for a deletion attempt at `now`: pending deletion, and past its
/// retry backoff unless an admin's run ignores it.
pub fn deletion_due(row: &Sandbox, now: EpochSecs, ignore_backoff: bool) -> bool {
    row.status == SandboxStatus::PendingDeletion
        && (ignore_backoff || row.next_deletion_attempt_at.is_none_or(|at| at <= now))
}

/// Whether `row`, read after a release's write was refused or its answer lost, shows the
/// release made at `now` applied (by this call's earlier attempt, say) rather than an older one.
pub fn release_applied(row: &Sandbox, now: EpochSecs) -> bool {
    row.status == SandboxStatus::PendingDeletion && row.deletion_requested_at == Some(now)
}

#[cfg(test)]
pub(crate) mod tests {
    pub(crate) use super::sync::tests::RULES;
    use super::*;
    use crate::domain::{ExternalId, NewSandbox, SandboxId, SandboxName};

    /// A `lab-1` row in `status`, held by `holder`.
    pub(crate) fn row(status: SandboxStatus, holder: Option<&str>) -> Sandbox {
        let mut row = NewSandbox {
            sandbox_id: SandboxId::parse("id", "1").unwrap(),
            name: SandboxName::parse("name", "lab-1").unwrap(),
            external_id: ExternalId::parse("ext", "identity/accounts/1").unwrap(),
            sfdc_account_id: None,
        }
        .into_available_row(EpochSecs::new(100));
        row.status = status;
        row.holder = holder.map(str::to_owned);
        row
    }

    fn holder(key: &str) -> HolderKey {
        HolderKey::parse("h", key).unwrap()
    }

    #[test]
    fn only_an_available_row_is_allocated_and_it_becomes_the_grants() {
        let grant = Grant {
            token_id: None,
            reservation: None,
            holder: "stu",
            idempotency_key: "key-1",
            lab: None,
            lab_duration_hours: 4,
            now: EpochSecs::new(500),
        };
        for status in SandboxStatus::ALL {
            let mut candidate = row(status, None);
            candidate.lab = Some("an earlier lab".into());
            let change = allocate(&candidate, &grant);
            assert_eq!(
                change.is_some(),
                status == SandboxStatus::Available,
                "{status:?}"
            );
            let Some(change) = change else { continue };
            let taken = &change.row;
            assert_eq!(
                (
                    taken.status,
                    taken.holder.as_deref(),
                    taken.idempotency_key.as_deref(),
                    taken.lab.as_deref(),
                ),
                (SandboxStatus::Allocated, Some("stu"), Some("key-1"), None),
                "a grant without a track clears an earlier one"
            );
            assert_eq!(
                (
                    taken.allocated_at,
                    taken.lab_duration_hours,
                    taken.updated_at
                ),
                (Some(EpochSecs::new(500)), Some(4), EpochSecs::new(500))
            );
            assert!(taken.allocated_here());
            assert_eq!(change.expect.status, SandboxStatus::Available);
            assert_eq!(
                (
                    change.expect.held_by.as_deref(),
                    change.expect.claimed_by.as_deref()
                ),
                (None, None)
            );
        }
    }

    #[test]
    fn a_reserved_row_goes_only_to_its_reservations_lab_and_keeps_its_name() {
        let available = row(SandboxStatus::Available, None);
        let reserved = reserve(&available, "res_1", EpochSecs::new(200)).unwrap();
        assert_eq!(
            (reserved.row.status, reserved.row.reserved_for.as_deref()),
            (SandboxStatus::Reserved, Some("res_1"))
        );
        assert_eq!(reserved.expect.status, SandboxStatus::Available);
        for status in SandboxStatus::ALL {
            assert_eq!(
                reserve(&row(status, None), "res_1", EpochSecs::new(200)).is_some(),
                status == SandboxStatus::Available,
                "{status:?}"
            );
        }
        let grant = |reservation| Grant {
            token_id: None,
            reservation,
            holder: "stu",
            idempotency_key: "stu",
            lab: Some("lab-a"),
            lab_duration_hours: 4,
            now: EpochSecs::new(500),
        };
        assert!(
            allocate(&reserved.row, &grant(None)).is_none(),
            "not without it"
        );
        assert!(
            allocate(&reserved.row, &grant(Some("res_2"))).is_none(),
            "not another's"
        );
        let drawn = allocate(&reserved.row, &grant(Some("res_1"))).unwrap();
        assert_eq!(
            (drawn.row.status, drawn.row.reserved_for.as_deref()),
            (SandboxStatus::Allocated, Some("res_1")),
            "the reservation counts it as used"
        );
        assert_eq!(
            (drawn.expect.status, drawn.expect.reserved_for.as_deref()),
            (SandboxStatus::Reserved, Some("res_1"))
        );
        let from_pool = allocate(&available, &grant(Some("res_1"))).unwrap();
        assert_eq!(
            from_pool.row.reserved_for, None,
            "a pool row is not the reservation's"
        );
        assert!(unreserve(&reserved.row, "res_2", EpochSecs::new(900)).is_none());
        let back = unreserve(&reserved.row, "res_1", EpochSecs::new(900)).unwrap();
        assert_eq!(
            (
                back.row.status,
                back.row.reserved_for.clone(),
                back.expect.reserved_for.as_deref()
            ),
            (SandboxStatus::Available, None, Some("res_1"))
        );
        assert!(
            unreserve(&drawn.row, "res_1", EpochSecs::new(900)).is_none(),
            "handed out"
        );
    }

    #[test]
    fn only_the_holder_releases_and_a_second_release_is_a_repeat() {
        use SandboxStatus::*;
        let cases = [
            (Allocated, Some("stu"), "stu", Ok(true)),
            (Allocated, Some("other"), "stu", Err(NotHolder)),
            (Available, None, "stu", Err(NotHolder)),
            (PendingDeletion, Some("stu"), "stu", Ok(false)),
            (Deleted, Some("stu"), "stu", Ok(false)),
            (PendingDeletion, Some("other"), "stu", Err(NotHolder)),
        ];
        for (status, held_by, asking, expected) in cases {
            let decided = release(
                &row(status, held_by),
                &holder(asking),
                None,
                EpochSecs::new(500),
            )
            .map(|release| matches!(release, Release::Now(_)));
            assert_eq!(
                decided, expected,
                "{status:?} held by {held_by:?}, {asking} asks"
            );
        }
    }

    #[test]
    fn expiry_ends_only_an_ended_lab_and_only_that_same_allocation() {
        let policy = LabPolicy {
            lab_duration_hours: 1,
            grace_secs: 60,
        };
        let mut held = row(SandboxStatus::Allocated, Some("stu"));
        held.allocated_at = Some(EpochSecs::new(1_000));
        held.lab_duration_hours = Some(1);
        let ends = 1_000 + 3_600 + 60;
        assert_eq!(
            expire(&held, policy, EpochSecs::new(ends)),
            None,
            "not before the grace is over"
        );
        let change = expire(&held, policy, EpochSecs::new(ends + 1)).expect("expired");
        assert_eq!(change.row.status, SandboxStatus::PendingDeletion);
        assert_eq!(
            change.row.deletion_requested_at,
            Some(EpochSecs::new(ends + 1))
        );
        assert!(change.expect.holds_for(&held));
        let mut reallocated = held;
        reallocated.allocated_at = Some(EpochSecs::new(2_000));
        assert!(
            !change.expect.holds_for(&reallocated),
            "a newer allocation stays"
        );
        let released = row(SandboxStatus::PendingDeletion, Some("stu"));
        assert_eq!(expire(&released, policy, EpochSecs::new(ends + 1)), None);
    }

    #[test]
    fn a_pending_row_is_due_once_its_backoff_has_passed_or_when_an_admin_ignores_it() {
        let mut pending = row(SandboxStatus::PendingDeletion, Some("stu"));
        assert!(
            deletion_due(&pending, EpochSecs::new(100), false),
            "never tried"
        );
        pending.next_deletion_attempt_at = Some(EpochSecs::new(200));
        assert!(!deletion_due(&pending, EpochSecs::new(199), false));
        assert!(deletion_due(&pending, EpochSecs::new(200), false));
        assert!(deletion_due(&pending, EpochSecs::new(199), true));
        let allocated = row(SandboxStatus::Allocated, Some("stu"));
        assert!(!deletion_due(&allocated, EpochSecs::new(100), true));
    }

    #[test]
    fn a_release_ends_the_allocation_now_and_requires_it_unchanged() {
        let held = row(SandboxStatus::Allocated, Some("stu"));
        let Ok(Release::Now(change)) = release(&held, &holder("stu"), None, EpochSecs::new(500))
        else {
            panic!("a release")
        };
        assert_eq!(change.row.status, SandboxStatus::PendingDeletion);
        assert_eq!(
            (change.row.deletion_requested_at, change.row.updated_at),
            (Some(EpochSecs::new(500)), EpochSecs::new(500))
        );
        assert!(change.expect.holds_for(&held));
        assert!(!change.expect.holds_for(&change.row));
        assert!(
            !change
                .expect
                .holds_for(&row(SandboxStatus::Allocated, Some("other")))
        );
        assert!(release_applied(&change.row, EpochSecs::new(500)));
        assert!(!release_applied(&change.row, EpochSecs::new(499)));
    }

    #[test]
    fn a_claim_writes_its_runner_and_end_and_a_tombstone_goes_at_its_ttl() {
        let pending = row(SandboxStatus::PendingDeletion, None);
        let claimed = claim_deletion(
            &pending,
            "runner-a",
            EpochSecs::new(100),
            EpochSecs::new(160),
        )
        .unwrap();
        assert_eq!(
            (
                claimed.deletion_claimed_by.as_deref(),
                claimed.deletion_claimed_until
            ),
            (Some("runner-a"), Some(EpochSecs::new(160)))
        );
        assert_eq!(
            claim_deletion(
                &claimed,
                "runner-b",
                EpochSecs::new(160),
                EpochSecs::new(220)
            ),
            None,
            "still held"
        );
        assert!(
            claim_deletion(
                &claimed,
                "runner-b",
                EpochSecs::new(161),
                EpochSecs::new(221)
            )
            .is_some()
        );
        assert_eq!(
            claim_deletion(
                &row(SandboxStatus::Allocated, None),
                "r",
                EpochSecs::new(0),
                EpochSecs::new(60)
            ),
            None
        );

        let mut tombstone = row(SandboxStatus::Deleted, None);
        tombstone.ttl = Some(EpochSecs::new(500));
        assert!(!tombstone_purgeable(&tombstone, EpochSecs::new(499)));
        assert!(tombstone_purgeable(&tombstone, EpochSecs::new(500)));
        tombstone.ttl = None;
        assert!(
            !tombstone_purgeable(&tombstone, EpochSecs::new(i64::MAX)),
            "no ttl: kept"
        );
        let mut pending_with_ttl = row(SandboxStatus::PendingDeletion, None);
        pending_with_ttl.ttl = Some(EpochSecs::new(1));
        assert!(
            !tombstone_purgeable(&pending_with_ttl, EpochSecs::new(500)),
            "only tombstones"
        );
    }
}
