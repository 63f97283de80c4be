//! Sandbox rows and the validated values that may reach the store.
//!
//! Rule: every value from the outside world is parsed into one of these types at
//! the edge, so the store and the allocation rules never see an unchecked string.

pub mod actions;
pub mod audit;
pub mod clock;
pub mod cordon;
pub mod deletion;
pub mod lease;
pub mod lifecycle;
pub mod reservations;
mod sandbox;
pub mod time;
pub mod tokens;
pub mod usage;
pub mod used;
mod values;
pub mod webhooks;

pub use self::sandbox::*;
pub use self::values::*;

/// The current time in epoch seconds; all timestamps in the API are integers.
pub fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Milliseconds since the Unix epoch (0 if the clock is before it), for job leases.
pub fn now_epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(
            HolderKey::parse("h", "  stu-1 ").map(|k| k.0),
            Ok("stu-1".into())
        );
        assert!(HolderKey::parse("h", "   ").is_err());
        assert!(HolderKey::parse("h", &"a".repeat(257)).is_err());
        assert!(HolderKey::parse("h", &"a".repeat(256)).is_ok());
        assert!(NamePrefix::parse("h", &"a".repeat(129)).is_err());
    }

    #[test]
    fn control_and_non_ascii_characters_are_rejected() {
        for bad in ["a\u{7}b", "a\u{7f}", "caf\u{e9}", "a\tb"] {
            assert!(SandboxId::parse("id", bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn bulk_delete_accepts_only_the_documented_statuses() {
        for ok in ["available", "stale", "deletion_failed", "deleted"] {
            assert!(DeletableStatus::parse(ok).is_ok(), "{ok} refused");
        }
        for bad in ["allocated", "pending_deletion", "", "ALL", "Available"] {
            assert!(DeletableStatus::parse(bad).is_err(), "{bad} accepted");
        }
    }

    fn allocated(hours: Option<u32>, by: Option<&str>, at: i64) -> Sandbox {
        let mut row = NewSandbox {
            sandbox_id: SandboxId::parse("id", "1").unwrap(),
            name: SandboxName::parse("n", "lab-1").unwrap(),
            external_id: ExternalId::parse("e", "identity/accounts/x").unwrap(),
            sfdc_account_id: None,
        }
        .into_available_row(crate::domain::time::EpochSecs::new(10));
        row.status = SandboxStatus::Allocated;
        row.allocated_at = Some(crate::domain::time::EpochSecs::new(at));
        row.lab_duration_hours = hours;
        row.allocated_by = by.map(str::to_owned);
        row
    }

    /// `LAB_DURATION_HOURS` 48, `GRACE_PERIOD_MINUTES` 30.
    const POLICY: LabPolicy = LabPolicy {
        lab_duration_hours: 48,
        grace_secs: 1800,
    };

    #[test]
    fn a_lab_ends_by_the_duration_this_service_recorded_else_by_the_configured_one() {
        let hour = 3600;
        let ours = Some(ALLOCATED_BY_BROKER);
        // (lab_duration_hours, allocated_by, expected expires_at for allocated_at = 0)
        let table = [
            (Some(2), ours, 2 * hour),
            (Some(0), ours, 0),
            // This service's allocation from before it recorded a duration.
            (None, ours, 48 * hour),
            // The Python service's rows: its sync writes 4 on every row; it expired by 48.
            (Some(4), None, 48 * hour),
            (None, None, 48 * hour),
            (Some(4), Some("someone-else"), 48 * hour),
        ];
        for (hours, by, expected) in table {
            let row = allocated(hours, by, 0);
            assert_eq!(
                POLICY.expires_at(&row),
                Some(crate::domain::time::EpochSecs::new(expected)),
                "{hours:?} {by:?}"
            );
        }
        let mut never = allocated(Some(2), ours, 0);
        never.allocated_at = None;
        assert_eq!(POLICY.expires_at(&never), None);
    }

    #[test]
    fn python_allocations_expire_after_the_global_duration_and_grace() {
        let now = 1_000_000_000;
        let hour = 3600;
        let python = |hours_ago: i64| allocated(Some(4), None, now - hours_ago * hour);
        assert!(
            !POLICY.expired(&python(5), crate::domain::time::EpochSecs::new(now)),
            "5 h into a 48 h lab"
        );
        assert!(
            !POLICY.expired(&python(48), crate::domain::time::EpochSecs::new(now)),
            "within the grace"
        );
        assert!(POLICY.expired(&python(49), crate::domain::time::EpochSecs::new(now)));
        let ours =
            |hours_ago: i64| allocated(Some(4), Some(ALLOCATED_BY_BROKER), now - hours_ago * hour);
        assert!(!POLICY.expired(&ours(4), crate::domain::time::EpochSecs::new(now)));
        assert!(
            POLICY.expired(&ours(5), crate::domain::time::EpochSecs::new(now)),
            "this service's 4 h lab, 30 min grace"
        );
        let mut released = python(49);
        released.status = SandboxStatus::PendingDeletion;
        assert!(
            !POLICY.expired(&released, crate::domain::time::EpochSecs::new(now)),
            "only allocations expire"
        );
    }
}
