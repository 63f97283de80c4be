//! Job leases: one rule for when a lease may be taken, shared by both stores.
//!
//! Rule: a lease runs until its end, exclusive — at `now_ms == expires_at_ms` it has run
//! out. It may be taken by anyone when nobody holds it or it has run out, and renewed by
//! its holder at any time. The embedded store applies [`decide`] inside its write
//! transaction; the DynamoDB store sends [`TAKE_CONDITION`], the same rule as a condition
//! expression, and reads a refusal back through [`decide`].

/// The DynamoDB condition of a take or renewal: `:me` the taker, `:now` the time in epoch
/// milliseconds. It says exactly what [`decide`] says.
pub const TAKE_CONDITION: &str =
    "attribute_not_exists(holder) OR holder = :me OR lease_expires_at_ms <= :now";

/// What a take of a lease comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// The taker gets (or keeps) the lease.
    Take,
    /// Someone else's lease is still running.
    HeldBy {
        /// Its holder.
        holder: String,
        /// When it runs out (epoch milliseconds).
        until_ms: i64,
    },
}

/// Whether a lease ending at `expires_at_ms` still runs at `now_ms`.
pub fn is_running(expires_at_ms: i64, now_ms: i64) -> bool {
    expires_at_ms > now_ms
}

/// Whether `taker` may take the lease now held by `holder` until `expires_at_ms`.
pub fn decide(holder: Option<&str>, expires_at_ms: i64, taker: &str, now_ms: i64) -> LeaseDecision {
    match holder {
        Some(other) if other != taker && is_running(expires_at_ms, now_ms) => {
            LeaseDecision::HeldBy {
                holder: other.to_owned(),
                until_ms: expires_at_ms,
            }
        }
        _ => LeaseDecision::Take,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_free_unheld_own_or_run_out_and_runs_out_at_its_end() {
        let held = |holder: &str, until_ms| LeaseDecision::HeldBy {
            holder: holder.into(),
            until_ms,
        };
        let cases = [
            (None, 0, "a", 10, LeaseDecision::Take),
            (Some("a"), 100, "a", 10, LeaseDecision::Take),
            (Some("b"), 100, "a", 10, held("b", 100)),
            (Some("b"), 100, "a", 99, held("b", 100)),
            (Some("b"), 100, "a", 100, LeaseDecision::Take),
            (Some("b"), 100, "a", 101, LeaseDecision::Take),
        ];
        for (holder, expires, taker, now, expected) in cases {
            assert_eq!(
                decide(holder, expires, taker, now),
                expected,
                "{holder:?} until {expires}, {taker} at {now}"
            );
        }
    }
}
