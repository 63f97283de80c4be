//! What a sync trusts of a provider listing, decided without I/O.
//!
//! Rule: a listing is applied only when it is believable ([`SyncRules::believe`]): one
//! that would mark more than `SYNC_MAX_STALE_FRACTION` of the available pool stale at once
//! changes nothing unless an admin forces it. And a deletion the provider reported but
//! contradicts, by listing the account past `DELETION_VERIFY_GRACE_SEC`, is not trusted:
//! it is retried ([`unverified_deletion`]).

use super::Change;
use super::sync::while_still;
use crate::domain::deletion::{AttemptFailure, DeletionOutcome, DeletionPolicy};
use crate::domain::time::EpochSecs;
use crate::domain::{Sandbox, SandboxStatus};

/// How a sync applies a provider listing.
#[derive(Debug, Clone, Copy)]
pub struct SyncRules {
    /// `SYNC_MAX_STALE_FRACTION`: the largest share of the available pool one listing may
    /// mark stale.
    pub max_stale_fraction: f64,
    /// Apply the listing even beyond that share (`POST /v1/admin/sync?force=true`).
    pub force: bool,
    /// `DELETION_VERIFY_GRACE_SEC`: how long after the provider reported an account
    /// deleted it may still list it before the deletion is taken as failed.
    pub deletion_verify_grace_secs: i64,
    /// The retry rules an unverified deletion is retried under.
    pub deletion: DeletionPolicy,
}

/// A listing not applied: it would have marked too much of the pool stale at once.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error(
    "the provider listing would mark {would_mark_stale} of {available} available sandboxes \
     stale, more than SYNC_MAX_STALE_FRACTION ({max_stale_fraction}) allows; not applied"
)]
pub struct ListingRefused {
    /// Available rows the listing leaves out.
    pub would_mark_stale: u64,
    /// Available rows before the sync.
    pub available: u64,
    /// The share allowed.
    pub max_stale_fraction: f64,
}

impl SyncRules {
    /// Whether a listing that leaves out `would_mark_stale` of the `available` rows is
    /// believable: at most `max_stale_fraction` of them (any number when forced). A
    /// provider glitch that answers an empty or partial listing never empties the pool.
    pub fn believe(&self, available: u64, would_mark_stale: u64) -> Result<(), ListingRefused> {
        #[allow(clippy::cast_precision_loss)] // pool sizes are far below 2^52
        let too_many = would_mark_stale as f64 > self.max_stale_fraction * available as f64;
        if self.force || would_mark_stale == 0 || !too_many {
            return Ok(());
        }
        Err(ListingRefused {
            would_mark_stale,
            available,
            max_stale_fraction: self.max_stale_fraction,
        })
    }
}

/// A `deleted` row whose account the provider still lists more than the verification
/// grace after it reported the deletion: the report is not trusted. The deletion counts
/// as one refused attempt under the deletion retry rules, so the row goes back to
/// `pending_deletion` for cleanup to try again (or, once the attempts are used up, to
/// `deletion_failed`), with an error that says why; it stops being a tombstone.
pub fn unverified_deletion(row: &Sandbox, rules: &SyncRules, now: EpochSecs) -> Option<Change> {
    let deleted_at = row.deleted_at?;
    if row.status != SandboxStatus::Deleted || now - deleted_at <= rules.deletion_verify_grace_secs
    {
        return None;
    }
    let message = format!(
        "deletion unverified: the provider reported it deleted at {deleted_at} but still \
         lists it {} s later",
        now - deleted_at
    );
    let outcome = rules
        .deletion
        .decide(row, AttemptFailure::Refused, message, now);
    let mut retried = row.clone();
    retried.updated_at = now;
    retried.deleted_at = None;
    retried.ttl = None;
    match outcome {
        DeletionOutcome::Retry {
            attempts, error, ..
        } => {
            retried.status = SandboxStatus::PendingDeletion;
            retried.deletion_retry_count = attempts;
            // Due at once: the provider's own grace already passed.
            retried.next_deletion_attempt_at = Some(now);
            retried.last_deletion_error = Some(error);
        }
        DeletionOutcome::Failed { attempts, error } => {
            retried.status = SandboxStatus::DeletionFailed;
            retried.deletion_retry_count = attempts;
            retried.last_deletion_error = Some(error);
        }
        DeletionOutcome::Deleted { .. } | DeletionOutcome::Released => return None,
    }
    Some(Change {
        by_expiry: false,
        row: retried,
        expect: while_still(SandboxStatus::Deleted),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::tests::{RULES, row};

    fn tombstone(deleted_at: i64, retries: u32) -> Sandbox {
        let mut deleted = row(SandboxStatus::Deleted, None);
        deleted.allocated_at = Some(EpochSecs::new(100));
        deleted.deleted_at = Some(EpochSecs::new(deleted_at));
        deleted.ttl = Some(EpochSecs::new(deleted_at + 7 * 86_400));
        deleted.deletion_retry_count = retries;
        deleted
    }

    #[test]
    fn a_deletion_the_provider_contradicts_past_the_grace_is_retried_then_given_up() {
        // Within the grace (the provider may list it a while longer): trusted.
        assert_eq!(
            unverified_deletion(&tombstone(1_000, 0), &RULES, EpochSecs::new(4_600)),
            None
        );
        // Past it: back to pending deletion, due now, no longer a tombstone.
        let change = unverified_deletion(&tombstone(1_000, 0), &RULES, EpochSecs::new(4_601))
            .expect("an unverified deletion is written");
        let retried = &change.row;
        assert_eq!(
            (
                retried.status,
                retried.deleted_at,
                retried.ttl,
                retried.next_deletion_attempt_at,
                retried.deletion_retry_count,
            ),
            (
                SandboxStatus::PendingDeletion,
                None,
                None,
                Some(EpochSecs::new(4_601)),
                1
            )
        );
        let error = retried.last_deletion_error.as_deref().unwrap();
        assert!(
            error.starts_with("deletion unverified: the provider reported it deleted at 1000"),
            "{error}"
        );
        assert_eq!(change.expect.status, SandboxStatus::Deleted);
        // The last allowed attempt used up: given up, for an operator.
        let given_up =
            unverified_deletion(&tombstone(1_000, 2), &RULES, EpochSecs::new(9_000)).unwrap();
        assert_eq!(given_up.row.status, SandboxStatus::DeletionFailed);
        assert_eq!(
            given_up.row.ttl, None,
            "a failed row is never dropped by ttl"
        );
    }

    #[test]
    fn a_listing_that_would_mark_more_than_the_allowed_share_stale_is_refused_unless_forced() {
        assert_eq!(RULES.believe(30, 15), Ok(()));
        assert_eq!(
            RULES.believe(30, 16),
            Err(ListingRefused {
                would_mark_stale: 16,
                available: 30,
                max_stale_fraction: 0.5
            })
        );
        assert!(RULES.believe(30, 30).is_err(), "an empty listing");
        assert_eq!(RULES.believe(0, 0), Ok(()), "nothing to lose");
        let forced = SyncRules {
            force: true,
            ..RULES
        };
        assert_eq!(forced.believe(30, 30), Ok(()));
    }
}
