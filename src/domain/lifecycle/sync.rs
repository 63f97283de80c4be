//! What a provider sync and an admin's import do to the rows they name, decided without
//! I/O.
//!
//! Rule: the provider's view (or an import's) writes a row only when there is none or the
//! row is in a status it may replace ([`SYNC_REPLACES`], [`IMPORT_REPLACES`]); it then
//! takes the listed name, provider id and (when given) Salesforce account, and becomes
//! `available`, keeping everything else the row remembers (when it was created, its
//! retry count, …). Anything held keeps its status: an allocation racing a sync wins.
//! An account that was ever handed out never becomes `available` again: not when its row
//! is gone (its [`crate::domain::used::UsedAccount`] marker keeps it out), and not from
//! `stale`. What a sync trusts of the listing itself is `listing.rs`'s.

use super::listing::{SyncRules, unverified_deletion};
use super::{Change, Expect};
use crate::domain::time::EpochSecs;
use crate::domain::used::was_used;
use crate::domain::{NewSandbox, Sandbox, SandboxStatus};

/// What the broker has for a sandbox a sync or an import names.
#[derive(Debug, Clone, Copy)]
pub enum Prior<'a> {
    /// Its row.
    Row(&'a Sandbox),
    /// No row, but the marker of an account handed out (or reported deleted) before.
    Used,
    /// Nothing: the account is new to the broker.
    Nothing,
}

impl<'a> Prior<'a> {
    /// `row` if there is one, else the marker if `used`, else nothing.
    pub fn of(row: Option<&'a Sandbox>, used: bool) -> Self {
        match (row, used) {
            (Some(row), _) => Self::Row(row),
            (None, true) => Self::Used,
            (None, false) => Self::Nothing,
        }
    }

    /// The row, if there is one.
    pub fn row(self) -> Option<&'a Sandbox> {
        match self {
            Self::Row(row) => Some(row),
            Self::Used | Self::Nothing => None,
        }
    }
}

/// What a provider sync does with one listed sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStep {
    /// No row yet: a new `available` row.
    Added,
    /// An `available` row: refreshed from the listing.
    Refreshed,
    /// A `stale` row the provider lists again: `available` once more.
    Restored,
    /// Allocated, pending deletion, deleted or failed: the provider's view never wins.
    Untouched,
    /// An account handed out before (its row gone, or a stale row that was once
    /// allocated): kept out of the pool.
    KeptOut,
    /// A `deleted` row the provider still lists past the verification grace: its deletion
    /// is retried.
    Unverified,
}

/// The statuses a sync may overwrite with the provider's view.
pub const SYNC_REPLACES: [SandboxStatus; 2] = [SandboxStatus::Available, SandboxStatus::Stale];

/// The statuses an import may overwrite: only `available` (a stale row waits for the
/// provider to list it again).
pub const IMPORT_REPLACES: [SandboxStatus; 1] = [SandboxStatus::Available];

/// The statuses whose listed rows a sync never writes, whatever the listing says or when:
/// a store may skip them knowing only their ids. (A `deleted` row is not among them: a
/// sync verifies its deletion.)
pub const SYNC_NEVER_WRITES: [SandboxStatus; 5] = [
    SandboxStatus::Allocated,
    SandboxStatus::PendingDeletion,
    SandboxStatus::DeletionFailed,
    SandboxStatus::Quarantined,
    SandboxStatus::Reserved,
];

/// Whether a sync that no longer finds a row's sandbox at the provider marks it `stale`:
/// an `available` one, or one set aside for a reservation (never handed out: a class must
/// not get an account the provider dropped). Anything held keeps its status.
pub fn goes_stale(status: SandboxStatus) -> bool {
    matches!(status, SandboxStatus::Available | SandboxStatus::Reserved)
}

/// Marking a row the provider no longer lists: an available (or reserved) one becomes
/// `stale`, provided it is still so when the change lands; anything else is left alone
/// (`None`). A reservation's row leaves it (the reservations job holds another).
pub fn mark_stale(row: &Sandbox, now: EpochSecs) -> Option<Change> {
    goes_stale(row.status).then(|| {
        let mut stale = row.clone();
        stale.status = SandboxStatus::Stale;
        stale.reserved_for = None;
        stale.updated_at = now;
        Change {
            by_expiry: false,
            row: stale,
            expect: Expect {
                reserved_for: row.reserved_for.clone(),
                ..while_still(row.status)
            },
        }
    })
}

/// Whether stale removal deletes a row: `stale`, and untouched since `stale_since` (the
/// grace's start). DynamoDB's delete repeats both as its condition, so a row restored
/// or touched after it was read is left alone.
pub fn stale_removable(row: &Sandbox, stale_since: EpochSecs) -> bool {
    row.status == SandboxStatus::Stale && row.updated_at <= stale_since
}

/// How a sync or an import writes one sandbox it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upsert {
    /// There is no row: this new one, provided there still is none (and no used-account
    /// marker) when it lands.
    Insert(Sandbox),
    /// The row as read becomes this one, provided it is still in the status read.
    Update(Change),
}

impl Upsert {
    /// The row as it is written.
    pub fn row(&self) -> &Sandbox {
        match self {
            Self::Insert(row) => row,
            Self::Update(change) => &change.row,
        }
    }
}

/// What a sync or an import decided for one sandbox: the step it counts as, and the
/// write (`None`: the row is left alone). Both come from one decision, so they agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// How the sync counts it.
    pub step: SyncStep,
    /// The write.
    pub upsert: Option<Upsert>,
}

/// A sync's decision for `listed` given what the broker has for it: a new available row,
/// the row refreshed from the listing and available (again), stamped `last_synced = now`,
/// an unverified deletion retried, or nothing.
pub fn sync_listed(
    prior: Prior<'_>,
    listed: &NewSandbox,
    rules: &SyncRules,
    now: EpochSecs,
) -> Decision {
    if let Prior::Row(old) = prior
        && let Some(change) = unverified_deletion(old, rules, now)
    {
        return Decision {
            step: SyncStep::Unverified,
            upsert: Some(Upsert::Update(change)),
        };
    }
    let step = match prior {
        Prior::Nothing => SyncStep::Added,
        Prior::Used => SyncStep::KeptOut,
        Prior::Row(old) if old.status == SandboxStatus::Stale && was_used(old) => SyncStep::KeptOut,
        Prior::Row(old) => match old.status {
            SandboxStatus::Available => SyncStep::Refreshed,
            SandboxStatus::Stale => SyncStep::Restored,
            _ => SyncStep::Untouched,
        },
    };
    let upsert = match step {
        SyncStep::Added | SyncStep::Refreshed | SyncStep::Restored => {
            let mut upsert = upsert(prior.row(), listed, now);
            match &mut upsert {
                Upsert::Insert(row) => row.last_synced = Some(now),
                Upsert::Update(change) => change.row.last_synced = Some(now),
            }
            Some(upsert)
        }
        SyncStep::Untouched | SyncStep::KeptOut | SyncStep::Unverified => None,
    };
    Decision { step, upsert }
}

/// An import's write for `incoming` given what the broker has for it: as a sync's, but it
/// replaces only an available row, never brings back a used account, and says nothing of
/// the provider's listing (`last_synced` is unchanged). `None`: the row is skipped.
pub fn import_row(prior: Prior<'_>, incoming: &NewSandbox, now: EpochSecs) -> Option<Upsert> {
    match prior {
        Prior::Used => None,
        Prior::Row(old) if !IMPORT_REPLACES.contains(&old.status) => None,
        Prior::Row(_) | Prior::Nothing => Some(upsert(prior.row(), incoming, now)),
    }
}

/// The expectation of a sync's or an import's write: the row is still in `status`.
pub(super) fn while_still(status: SandboxStatus) -> Expect {
    Expect {
        status,
        held_by: None,
        claimed_by: None,
        allocated_at: None,
        reserved_for: None,
    }
}

/// `incoming` written over `old` (or as a new row): available, with the incoming name,
/// provider id and Salesforce account, and everything else `old` remembers.
fn upsert(old: Option<&Sandbox>, incoming: &NewSandbox, now: EpochSecs) -> Upsert {
    let Some(old) = old else {
        return Upsert::Insert(incoming.clone().into_available_row(now));
    };
    let mut row = old.clone();
    row.status = SandboxStatus::Available;
    row.name = incoming.name.as_str().to_owned();
    row.external_id = incoming.external_id.as_str().to_owned();
    // A listing without a Salesforce account does not forget the one the row has.
    if let Some(account) = &incoming.sfdc_account_id {
        row.sfdc_account_id = Some(account.clone());
    }
    row.updated_at = now;
    Upsert::Update(Change {
        row,
        expect: while_still(old.status),
        by_expiry: false,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::lifecycle::tests::row;
    use crate::domain::{ExternalId, SandboxId, SandboxName};

    #[test]
    fn only_an_available_or_reserved_row_is_marked_stale_and_only_while_still_so() {
        for status in SandboxStatus::ALL {
            let mut listed = row(status, None);
            if status == SandboxStatus::Reserved {
                listed.reserved_for = Some("res_1".into());
            }
            let change = mark_stale(&listed, EpochSecs::new(700));
            assert_eq!(
                change.is_some(),
                matches!(status, SandboxStatus::Available | SandboxStatus::Reserved),
                "{status:?}"
            );
            if let Some(change) = change {
                assert_eq!(
                    (
                        change.row.status,
                        change.row.updated_at,
                        change.row.reserved_for
                    ),
                    (SandboxStatus::Stale, EpochSecs::new(700), None),
                    "a reservation's row leaves it"
                );
                assert_eq!(change.expect.status, status);
                assert_eq!(change.expect.reserved_for, listed.reserved_for);
            }
        }
    }

    #[test]
    fn stale_removal_takes_only_stale_rows_untouched_since_the_grace_began() {
        for status in SandboxStatus::ALL {
            let mut candidate = row(status, None);
            candidate.updated_at = EpochSecs::new(1_000);
            assert_eq!(
                stale_removable(&candidate, EpochSecs::new(1_000)),
                status == SandboxStatus::Stale,
                "{status:?} at the boundary"
            );
            assert!(
                !stale_removable(&candidate, EpochSecs::new(999)),
                "{status:?} touched after"
            );
        }
    }

    /// The rules the unit tests sync under: the defaults, three refusals allowed.
    pub(crate) const RULES: SyncRules = SyncRules {
        max_stale_fraction: 0.5,
        force: false,
        deletion_verify_grace_secs: 3600,
        deletion: crate::domain::deletion::DeletionPolicy {
            max_attempts: 3,
            backoff_base_secs: 60,
            give_up_secs: 86_400,
            tombstone_ttl_secs: 7 * 86_400,
        },
    };

    fn step(prior: Prior<'_>) -> SyncStep {
        sync_listed(prior, &listed("lab-1", None), &RULES, EpochSecs::new(900)).step
    }

    #[test]
    fn a_sync_adds_refreshes_and_restores_but_never_overrides_a_held_row() {
        use SandboxStatus::*;
        assert_eq!(step(Prior::Nothing), SyncStep::Added);
        assert_eq!(step(Prior::Row(&row(Available, None))), SyncStep::Refreshed);
        assert_eq!(step(Prior::Row(&row(Stale, None))), SyncStep::Restored);
        for held in [Allocated, PendingDeletion, Deleted, DeletionFailed] {
            assert_eq!(
                step(Prior::Row(&row(held, None))),
                SyncStep::Untouched,
                "{held:?}"
            );
            assert!(!goes_stale(held), "{held:?}");
        }
        // Whatever the row remembers and however late, these are never written.
        for held in SYNC_NEVER_WRITES {
            let mut old = row(held, None);
            (old.allocated_at, old.deleted_at) =
                (Some(EpochSecs::new(100)), Some(EpochSecs::new(100)));
            let decision = sync_listed(
                Prior::Row(&old),
                &listed("lab-1", None),
                &RULES,
                EpochSecs::new(i64::MAX),
            );
            assert_eq!(decision.upsert, None, "{held:?}");
        }
        assert!(goes_stale(Available));
    }

    #[test]
    fn a_used_account_is_never_made_available_again_by_a_sync_or_an_import() {
        let incoming = listed("lab-1", None);
        let kept_out = sync_listed(Prior::Used, &incoming, &RULES, EpochSecs::new(900));
        assert_eq!((kept_out.step, kept_out.upsert), (SyncStep::KeptOut, None));
        assert_eq!(
            import_row(Prior::Used, &incoming, EpochSecs::new(900)),
            None
        );
        // A stale row that was allocated once (an older build put it back) stays stale.
        let mut once_allocated = row(SandboxStatus::Stale, None);
        once_allocated.allocated_at = Some(EpochSecs::new(500));
        let kept_out = sync_listed(
            Prior::Row(&once_allocated),
            &incoming,
            &RULES,
            EpochSecs::new(900),
        );
        assert_eq!((kept_out.step, kept_out.upsert), (SyncStep::KeptOut, None));
        assert_eq!(Prior::of(None, true).row(), None);
        assert!(matches!(
            Prior::of(Some(&once_allocated), true),
            Prior::Row(_)
        ));
    }

    #[test]
    fn a_sync_retries_a_deletion_the_listing_contradicts_past_the_grace() {
        let mut deleted = row(SandboxStatus::Deleted, None);
        deleted.deleted_at = Some(EpochSecs::new(1_000));
        let incoming = listed("lab-1", None);
        let within = sync_listed(
            Prior::Row(&deleted),
            &incoming,
            &RULES,
            EpochSecs::new(4_600),
        );
        assert_eq!((within.step, within.upsert), (SyncStep::Untouched, None));
        let past = sync_listed(
            Prior::Row(&deleted),
            &incoming,
            &RULES,
            EpochSecs::new(4_601),
        );
        assert_eq!(past.step, SyncStep::Unverified);
        assert_eq!(
            past.upsert.map(|upsert| upsert.row().status),
            Some(SandboxStatus::PendingDeletion)
        );
    }

    fn listed(name: &str, account: Option<&str>) -> NewSandbox {
        NewSandbox {
            sandbox_id: SandboxId::parse("id", "1").unwrap(),
            name: SandboxName::parse("name", name).unwrap(),
            external_id: ExternalId::parse("ext", "identity/accounts/new").unwrap(),
            sfdc_account_id: account.map(str::to_owned),
        }
    }

    /// A row in `status` with a history a refresh must keep.
    fn remembered(status: SandboxStatus) -> Sandbox {
        let mut old = row(status, None);
        old.created_at = EpochSecs::new(10);
        old.deletion_retry_count = 2;
        old.sfdc_account_id = Some("001OLD".into());
        old.lab = Some("an earlier lab".into());
        old
    }

    #[test]
    fn a_sync_writes_a_new_row_or_refreshes_a_replaceable_one_and_keeps_its_history() {
        let Some(Upsert::Insert(new)) = sync_listed(
            Prior::Nothing,
            &listed("lab-new", None),
            &RULES,
            EpochSecs::new(900),
        )
        .upsert
        else {
            panic!("a missing row is inserted")
        };
        assert_eq!(
            (
                new.status,
                new.name.as_str(),
                new.created_at,
                new.last_synced
            ),
            (
                SandboxStatus::Available,
                "lab-new",
                EpochSecs::new(900),
                Some(EpochSecs::new(900))
            )
        );
        for status in SandboxStatus::ALL {
            let old = remembered(status);
            let decision = sync_listed(
                Prior::Row(&old),
                &listed("lab-new", None),
                &RULES,
                EpochSecs::new(900),
            );
            let upsert = decision.upsert;
            assert_eq!(
                upsert.is_none(),
                decision.step == SyncStep::Untouched,
                "{status:?}: the write and the count agree"
            );
            let Some(Upsert::Update(change)) = upsert else {
                continue;
            };
            let refreshed = &change.row;
            assert_eq!(refreshed.status, SandboxStatus::Available, "{status:?}");
            assert_eq!(
                (refreshed.name.as_str(), refreshed.external_id.as_str()),
                ("lab-new", "identity/accounts/new")
            );
            assert_eq!(
                (refreshed.updated_at, refreshed.last_synced),
                (EpochSecs::new(900), Some(EpochSecs::new(900)))
            );
            assert_eq!(
                (
                    refreshed.created_at,
                    refreshed.deletion_retry_count,
                    refreshed.sfdc_account_id.as_deref(),
                    refreshed.lab.as_deref(),
                ),
                (
                    EpochSecs::new(10),
                    2,
                    Some("001OLD"),
                    Some("an earlier lab")
                ),
                "{status:?}: what the listing does not say is kept"
            );
            assert_eq!(change.expect.status, status, "only while still {status:?}");
            assert!(change.expect.holds_for(&old));
        }
        let Some(Upsert::Update(change)) = sync_listed(
            Prior::Row(&remembered(SandboxStatus::Available)),
            &listed("lab-1", Some("001NEW")),
            &RULES,
            EpochSecs::new(900),
        )
        .upsert
        else {
            panic!("an available row is refreshed")
        };
        assert_eq!(change.row.sfdc_account_id.as_deref(), Some("001NEW"));
    }

    #[test]
    fn an_import_replaces_only_an_available_row_and_says_nothing_of_a_sync() {
        let Some(Upsert::Insert(new)) = import_row(
            Prior::Nothing,
            &listed("lab-new", None),
            EpochSecs::new(900),
        ) else {
            panic!("a missing row is inserted")
        };
        assert_eq!(
            (new.status, new.last_synced),
            (SandboxStatus::Available, None)
        );
        for status in SandboxStatus::ALL {
            let mut old = remembered(status);
            old.last_synced = Some(EpochSecs::new(5));
            let upsert = import_row(
                Prior::Row(&old),
                &listed("lab-new", None),
                EpochSecs::new(900),
            );
            assert_eq!(
                upsert.is_some(),
                status == SandboxStatus::Available,
                "{status:?}"
            );
            if let Some(upsert) = upsert {
                let row = upsert.row();
                assert_eq!(
                    (row.name.as_str(), row.updated_at),
                    ("lab-new", EpochSecs::new(900))
                );
                assert_eq!(
                    (row.created_at, row.last_synced),
                    (EpochSecs::new(10), Some(EpochSecs::new(5)))
                );
            }
        }
    }
}
