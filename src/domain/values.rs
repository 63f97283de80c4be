//! The validated values: statuses, ids, names and keys, parsed once at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a sandbox is in its lifecycle (docs/api.md); the strings are the wire and table form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxStatus {
    /// In the pool, free to allocate.
    Available,
    /// Held by a student.
    Allocated,
    /// Released by its owner or expired; waiting for deletion at the provider.
    PendingDeletion,
    /// Deleted at the provider; kept as a tombstone until its `ttl`.
    Deleted,
    /// The provider refused to delete it too often; needs an operator.
    DeletionFailed,
    /// Was available but the provider no longer lists it.
    Stale,
    /// Taken out of the pool by an admin without being deleted (a suspicious account);
    /// only an admin puts it back, and only if it was never handed out.
    Quarantined,
    /// Set aside for a reservation's class (`reserved_for` names it); only that lab's
    /// allocations take it, and the reservations job returns it to the pool when the
    /// reservation ends.
    Reserved,
}

impl SandboxStatus {
    /// Every status, in the order stats report them.
    pub const ALL: [Self; 8] = [
        Self::Available,
        Self::Allocated,
        Self::PendingDeletion,
        Self::Stale,
        Self::DeletionFailed,
        Self::Deleted,
        Self::Quarantined,
        Self::Reserved,
    ];

    /// The wire and table string of this status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Allocated => "allocated",
            Self::PendingDeletion => "pending_deletion",
            Self::Deleted => "deleted",
            Self::DeletionFailed => "deletion_failed",
            Self::Stale => "stale",
            Self::Quarantined => "quarantined",
            Self::Reserved => "reserved",
        }
    }
}

impl fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SandboxStatus {
    type Err = ValidationError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| {
                ValidationError::new(
                    "status",
                    "must be one of available, allocated, pending_deletion, stale, deletion_failed, deleted, quarantined, reserved",
                )
            })
    }
}

/// The statuses `bulk-delete` may remove; anything else is refused so a typo never wipes live rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletableStatus(SandboxStatus);

impl DeletableStatus {
    /// Accepts `available`, `stale`, `deletion_failed` and `deleted` only.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        const ERR: &str = "must be one of available, stale, deletion_failed, deleted";
        match SandboxStatus::from_str(value) {
            Ok(
                status @ (SandboxStatus::Available
                | SandboxStatus::Stale
                | SandboxStatus::DeletionFailed
                | SandboxStatus::Deleted),
            ) => Ok(Self(status)),
            _ => Err(ValidationError::new("status", ERR)),
        }
    }

    /// The status whose rows are removed.
    pub fn status(self) -> SandboxStatus {
        self.0
    }
}

/// A value from a header, path, query or body that broke the input rules (docs/api.md, *Input rules*).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct ValidationError {
    /// The header, parameter or field at fault, as the client spelled it.
    pub field: String,
    /// What is wrong with it, phrased to follow the field name.
    pub reason: String,
}

impl ValidationError {
    /// Builds an error for `field` that `reason` explains.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Strips the optional whitespace HTTP allows around a value (spaces and tabs only), so a
/// control character such as a newline is rejected rather than silently trimmed away.
pub fn trim_blanks(raw: &str) -> &str {
    raw.trim_matches([' ', '\t'])
}

/// Checks the text rule (docs/api.md, *Input rules*): trimmed, `1..=max` printable ASCII characters.
pub(super) fn parse_text(field: &str, raw: &str, max: usize) -> Result<String, ValidationError> {
    let value = trim_blanks(raw);
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ValidationError::new(
            field,
            "must contain printable ASCII characters only",
        ));
    }
    Ok(value.to_owned())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, max = $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        // The value is reachable in `domain` (rows take it over) but checked everywhere else.
        pub struct $name(pub(in crate::domain) String);

        impl $name {
            /// Longest accepted value, in characters.
            pub const MAX_LEN: usize = $max;

            /// Trims `raw` and checks the length and character rules; `field`
            /// names the header or parameter in the error.
            pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
                parse_text(field, raw, Self::MAX_LEN).map(Self)
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_type!(
    /// Who holds a sandbox: `X-Instruqt-Sandbox-ID`, or the legacy `X-Track-ID`.
    HolderKey, max = 256
);
text_type!(
    /// The lab slug from `X-Instruqt-Track-ID`.
    LabName, max = 256
);
text_type!(
    /// A client's `Idempotency-Key`: a second key from one student is a second allocation.
    IdempotencyKey, max = 256
);
text_type!(
    /// Only sandboxes whose `name` starts with this (case-sensitive) are allocated.
    NamePrefix, max = 128
);
text_type!(
    /// Free text the admin list searches for in a row's id, name, holder key and lab
    /// (case-insensitive).
    SearchText, max = 128
);

impl SearchText {
    /// Whether `text` contains this, ignoring case.
    pub fn found_in(&self, text: &str) -> bool {
        text.to_lowercase().contains(&self.0.to_lowercase())
    }
}

text_type!(
    /// A sandbox's id: the provider's `csp_id` as a decimal string, or an imported id.
    SandboxId, max = 256
);
text_type!(
    /// A sandbox's display name, as imported or synced.
    SandboxName, max = 256
);
text_type!(
    /// The provider's id of a sandbox, e.g. `identity/accounts/<uuid>`.
    ExternalId, max = 512
);
