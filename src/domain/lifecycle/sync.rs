//! What a provider sync and an admin's import do to the rows they name, decided without
//! I/O.
//!
//! Rule: the provider's view (or an import's) writes a row only when there is none or the
//! row is in a status it may replace ([`SYNC_REPLACES`], [`IMPORT_REPLACES`]); it then
//! takes the listed name, provider id and (when given) Salesforce account, and becomes
//! `available`, keeping everything else the row remembers (when it was created, its
//! retry count, …). Anything held keeps its status: an allocation racing a sync wins.

use super::{Change, Expect};
use crate::domain::{NewSandbox, Sandbox, SandboxStatus};

/// What a provider sync does with one listed sandbox, decided by the status of the row
/// the broker has for it (`None`: no row).
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
}

/// The statuses a sync may overwrite with the provider's view.
pub const SYNC_REPLACES: [SandboxStatus; 2] = [SandboxStatus::Available, SandboxStatus::Stale];

/// The statuses an import may overwrite: only `available` (a stale row waits for the
/// provider to list it again).
pub const IMPORT_REPLACES: [SandboxStatus; 1] = [SandboxStatus::Available];

/// What a sync does with a listed sandbox whose row is in `status` (the summary's count;
/// [`sync_listed`] is the write).
pub fn sync_step(status: Option<SandboxStatus>) -> SyncStep {
    match status {
        None => SyncStep::Added,
        Some(SandboxStatus::Available) => SyncStep::Refreshed,
        Some(SandboxStatus::Stale) => SyncStep::Restored,
        Some(_) => SyncStep::Untouched,
    }
}

/// Whether a sync that no longer finds a row's sandbox at the provider marks it `stale`:
/// only an `available` one (anything held keeps its status).
pub fn goes_stale(status: SandboxStatus) -> bool {
    status == SandboxStatus::Available
}

/// Marking a row the provider no longer lists: an available one becomes `stale`, provided
/// it is still available when the change lands; anything else is left alone (`None`).
pub fn mark_stale(row: &Sandbox, now: i64) -> Option<Change> {
    goes_stale(row.status).then(|| {
        let mut stale = row.clone();
        stale.status = SandboxStatus::Stale;
        stale.updated_at = now;
        Change {
            row: stale,
            expect: Expect {
                status: row.status,
                held_by: None,
                claimed_by: None,
                allocated_at: None,
            },
        }
    })
}

/// Whether stale removal deletes a row: `stale`, and untouched since `stale_since` (the
/// grace's start). DynamoDB's delete repeats both as its condition, so a row restored
/// or touched after it was read is left alone.
pub fn stale_removable(row: &Sandbox, stale_since: i64) -> bool {
    row.status == SandboxStatus::Stale && row.updated_at <= stale_since
}

/// How a sync or an import writes one sandbox it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upsert {
    /// There is no row: this new one, provided there still is none when it lands.
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

/// A sync's write for `listed` when the broker's row for it is `old` (`None`: no row): a
/// new available row, or the row refreshed from the listing and available (again),
/// stamped `last_synced = now`. `None` when the sync leaves the row alone; it agrees with
/// [`sync_step`].
pub fn sync_listed(old: Option<&Sandbox>, listed: &NewSandbox, now: i64) -> Option<Upsert> {
    let mut upsert = upsert(old, listed, now, &SYNC_REPLACES)?;
    match &mut upsert {
        Upsert::Insert(row) => row.last_synced = Some(now),
        Upsert::Update(change) => change.row.last_synced = Some(now),
    }
    Some(upsert)
}

/// An import's write for `incoming` when the broker's row for it is `old`: as a sync's,
/// but it replaces only an available row and says nothing of the provider's listing
/// (`last_synced` is unchanged). `None`: the row is skipped.
pub fn import_row(old: Option<&Sandbox>, incoming: &NewSandbox, now: i64) -> Option<Upsert> {
    upsert(old, incoming, now, &IMPORT_REPLACES)
}

fn upsert(
    old: Option<&Sandbox>,
    incoming: &NewSandbox,
    now: i64,
    replaces: &[SandboxStatus],
) -> Option<Upsert> {
    let Some(old) = old else {
        return Some(Upsert::Insert(incoming.clone().into_available_row(now)));
    };
    if !replaces.contains(&old.status) {
        return None;
    }
    let mut row = old.clone();
    row.status = SandboxStatus::Available;
    row.name = incoming.name.as_str().to_owned();
    row.external_id = incoming.external_id.as_str().to_owned();
    // A listing without a Salesforce account does not forget the one the row has.
    if let Some(account) = &incoming.sfdc_account_id {
        row.sfdc_account_id = Some(account.clone());
    }
    row.updated_at = now;
    Some(Upsert::Update(Change {
        row,
        expect: Expect {
            status: old.status,
            held_by: None,
            claimed_by: None,
            allocated_at: None,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::tests::row;
    use crate::domain::{ExternalId, SandboxId, SandboxName};

    #[test]
    fn only_an_available_row_is_marked_stale_and_only_while_still_available() {
        for status in SandboxStatus::ALL {
            let change = mark_stale(&row(status, None), 700);
            assert_eq!(
                change.is_some(),
                status == SandboxStatus::Available,
                "{status:?}"
            );
            if let Some(change) = change {
                assert_eq!(
                    (change.row.status, change.row.updated_at),
                    (SandboxStatus::Stale, 700)
                );
                assert_eq!(change.expect.status, SandboxStatus::Available);
            }
        }
    }

    #[test]
    fn stale_removal_takes_only_stale_rows_untouched_since_the_grace_began() {
        for status in SandboxStatus::ALL {
            let mut candidate = row(status, None);
            candidate.updated_at = 1_000;
            assert_eq!(
                stale_removable(&candidate, 1_000),
                status == SandboxStatus::Stale,
                "{status:?} at the boundary"
            );
            assert!(
                !stale_removable(&candidate, 999),
                "{status:?} touched after"
            );
        }
    }

    #[test]
    fn a_sync_adds_refreshes_and_restores_but_never_overrides_a_held_row() {
        use SandboxStatus::*;
        assert_eq!(sync_step(None), SyncStep::Added);
        assert_eq!(sync_step(Some(Available)), SyncStep::Refreshed);
        assert_eq!(sync_step(Some(Stale)), SyncStep::Restored);
        for held in [Allocated, PendingDeletion, Deleted, DeletionFailed] {
            assert_eq!(sync_step(Some(held)), SyncStep::Untouched, "{held:?}");
            assert!(!goes_stale(held), "{held:?}");
        }
        for status in SYNC_REPLACES {
            assert_ne!(sync_step(Some(status)), SyncStep::Untouched);
        }
        assert!(goes_stale(Available));
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
        old.created_at = 10;
        old.deletion_retry_count = 2;
        old.sfdc_account_id = Some("001OLD".into());
        old.track_name = Some("an earlier lab".into());
        old
    }

    #[test]
    fn a_sync_writes_a_new_row_or_refreshes_a_replaceable_one_and_keeps_its_history() {
        let Some(Upsert::Insert(new)) = sync_listed(None, &listed("lab-new", None), 900) else {
            panic!("a missing row is inserted")
        };
        assert_eq!(
            (
                new.status,
                new.name.as_str(),
                new.created_at,
                new.last_synced
            ),
            (SandboxStatus::Available, "lab-new", 900, Some(900))
        );
        for status in SandboxStatus::ALL {
            let old = remembered(status);
            let upsert = sync_listed(Some(&old), &listed("lab-new", None), 900);
            assert_eq!(
                upsert.is_none(),
                sync_step(Some(status)) == SyncStep::Untouched,
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
                (900, Some(900))
            );
            assert_eq!(
                (
                    refreshed.created_at,
                    refreshed.deletion_retry_count,
                    refreshed.sfdc_account_id.as_deref(),
                    refreshed.track_name.as_deref(),
                ),
                (10, 2, Some("001OLD"), Some("an earlier lab")),
                "{status:?}: what the listing does not say is kept"
            );
            assert_eq!(change.expect.status, status, "only while still {status:?}");
            assert!(change.expect.holds_for(&old));
        }
        let Some(Upsert::Update(change)) = sync_listed(
            Some(&remembered(SandboxStatus::Available)),
            &listed("lab-1", Some("001NEW")),
            900,
        ) else {
            panic!("an available row is refreshed")
        };
        assert_eq!(change.row.sfdc_account_id.as_deref(), Some("001NEW"));
    }

    #[test]
    fn an_import_replaces_only_an_available_row_and_says_nothing_of_a_sync() {
        let Some(Upsert::Insert(new)) = import_row(None, &listed("lab-new", None), 900) else {
            panic!("a missing row is inserted")
        };
        assert_eq!(
            (new.status, new.last_synced),
            (SandboxStatus::Available, None)
        );
        for status in SandboxStatus::ALL {
            let mut old = remembered(status);
            old.last_synced = Some(5);
            let upsert = import_row(Some(&old), &listed("lab-new", None), 900);
            assert_eq!(
                upsert.is_some(),
                status == SandboxStatus::Available,
                "{status:?}"
            );
            if let Some(upsert) = upsert {
                let row = upsert.row();
                assert_eq!((row.name.as_str(), row.updated_at), ("lab-new", 900));
                assert_eq!((row.created_at, row.last_synced), (10, Some(5)));
            }
        }
    }
}
