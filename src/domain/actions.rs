//! The admins' action log: who did what to the pool, when, and why. Append-only: entries
//! are written once and never changed or removed by the service.

use serde::{Deserialize, Serialize};

use crate::domain::time::EpochSecs;

/// One admin write, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminAction {
    /// Epoch seconds it was done.
    pub at: EpochSecs,
    /// Who: the admin token's fingerprint (`admin:<12 hex>`, never the token).
    pub actor: String,
    /// What: the operation, as the access log names it (`admin.release`, `admin.sync`, …).
    pub action: String,
    /// What it was done to: a sandbox id, a status, a prefix…, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why, as the admin said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it came to (`deleted 3`, `forced`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One page of the log, newest first, and where the next (older) page starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionPage {
    /// The entries, newest first.
    pub actions: Vec<AdminAction>,
    /// The cursor of the next page, if there are older entries.
    pub next: Option<String>,
}

/// The sort key of an entry: its time, zero-padded so keys sort by time, then a unique
/// suffix so two entries in one second never collide.
pub fn action_key(action: &AdminAction, unique: &str) -> String {
    format!("{:012}#{unique}", action.at.max(EpochSecs::new(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_time_and_never_collide() {
        let at = |at| AdminAction {
            at,
            actor: "admin:0".into(),
            action: "admin.sync".into(),
            target: None,
            reason: None,
            detail: None,
        };
        assert!(action_key(&at(EpochSecs::new(9)), "b") < action_key(&at(EpochSecs::new(10)), "a"));
        assert_ne!(
            action_key(&at(EpochSecs::new(10)), "a"),
            action_key(&at(EpochSecs::new(10)), "b")
        );
        let json = serde_json::to_string(&at(EpochSecs::new(5))).unwrap();
        assert!(!json.contains("reason"), "{json}");
    }
}
