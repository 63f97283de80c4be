//! Cordons: an admin pauses new allocations for a name prefix or a lab while its accounts
//! are fixed. Students who already hold a sandbox there keep getting it back.

use serde::{Deserialize, Serialize};

use crate::domain::time::EpochSecs;

/// One cordon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cordon {
    /// Its id (names it in `DELETE /v1/admin/cordon/{id}`).
    pub id: String,
    /// Requests whose `X-Sandbox-Name-Prefix` starts with this are paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// Requests whose `X-Instruqt-Track-ID` is this are paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "track_name")]
    pub lab: Option<String>,
    /// Why, as the admin said: told to every paused request.
    pub reason: String,
    /// Epoch seconds it was put in place.
    pub created_at: EpochSecs,
    /// The admin who put it in place (their token's fingerprint).
    pub actor: String,
}

impl Cordon {
    /// Whether a new allocation asking for `name_prefix` (its `X-Sandbox-Name-Prefix`) and
    /// `track_name` (its `X-Instruqt-Track-ID`) is paused by this cordon: every selector it
    /// has must match, and it has at least one.
    pub fn pauses(&self, name_prefix: Option<&str>, lab: Option<&str>) -> bool {
        let prefix_matches = self
            .name_prefix
            .as_deref()
            .is_none_or(|cordoned| name_prefix.is_some_and(|asked| asked.starts_with(cordoned)));
        let lab_matches = self
            .lab
            .as_deref()
            .is_none_or(|cordoned| lab == Some(cordoned));
        (self.name_prefix.is_some() || self.lab.is_some()) && prefix_matches && lab_matches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cordon(name_prefix: Option<&str>, lab: Option<&str>) -> Cordon {
        Cordon {
            id: "c1".into(),
            name_prefix: name_prefix.map(str::to_owned),
            lab: lab.map(str::to_owned),
            reason: "fixing".into(),
            created_at: EpochSecs::new(0),
            actor: "admin:0".into(),
        }
    }

    #[test]
    fn a_cordon_pauses_the_requests_it_names_and_no_others() {
        let prefix = cordon(Some("lab-a-"), None);
        assert!(prefix.pauses(Some("lab-a-"), None));
        assert!(
            prefix.pauses(Some("lab-a-dns-"), Some("dns")),
            "a narrower prefix"
        );
        assert!(
            !prefix.pauses(Some("lab-"), None),
            "a wider prefix is not the cordoned pool"
        );
        assert!(!prefix.pauses(None, Some("dns")));
        let lab = cordon(None, Some("dns"));
        assert!(lab.pauses(None, Some("dns")));
        assert!(lab.pauses(Some("lab-b-"), Some("dns")));
        assert!(!lab.pauses(None, Some("dns-2")));
        let both = cordon(Some("lab-a-"), Some("dns"));
        assert!(both.pauses(Some("lab-a-"), Some("dns")));
        assert!(!both.pauses(Some("lab-a-"), Some("sec")));
        assert!(
            !cordon(None, None).pauses(Some("lab-a-"), Some("dns")),
            "names nothing"
        );
    }
}
