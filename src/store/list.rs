//! The admin list: its filters, its pages and their opaque cursor.

use super::*;

/// Filters and position of one page of the admin list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only rows in this status.
    pub status: Option<SandboxStatus>,
    /// Only rows whose name starts with this.
    pub name_prefix: Option<NamePrefix>,
    /// Only rows held by this student.
    pub holder: Option<HolderKey>,
    /// Only rows of this lab.
    pub lab: Option<LabName>,
    /// Only rows whose id, name, holder key or lab contains this (ignoring case).
    pub search: Option<SearchText>,
    /// Page size, 1..=100.
    pub limit: usize,
    /// Where the previous page stopped.
    pub cursor: Option<ListCursor>,
}

impl ListQuery {
    /// Whether `row` passes every filter.
    pub fn matches(&self, row: &Sandbox) -> bool {
        self.status.is_none_or(|s| row.status == s)
            && self
                .name_prefix
                .as_ref()
                .is_none_or(|p| row.name.starts_with(p.as_str()))
            && self
                .holder
                .as_ref()
                .is_none_or(|s| row.holder.as_deref() == Some(s.as_str()))
            && self
                .lab
                .as_ref()
                .is_none_or(|t| row.lab.as_deref() == Some(t.as_str()))
            && self.search.as_ref().is_none_or(|text| {
                [
                    Some(row.sandbox_id.as_str()),
                    Some(row.name.as_str()),
                    row.holder.as_deref(),
                    row.lab.as_deref(),
                ]
                .into_iter()
                .flatten()
                .any(|field| text.found_in(field))
            })
    }
}

/// One page of the admin list, in `sandbox_id` order.
#[derive(Debug, Clone)]
pub struct SandboxPage {
    /// The matching rows of this page.
    pub sandboxes: Vec<Sandbox>,
    /// Where to continue, or `None` when every matching row was returned.
    pub next: Option<ListCursor>,
}

/// An opaque list position: the last row returned (its `sandbox_id`, and its `allocated_at`
/// where the listing is ordered by it), versioned and base64url-encoded so clients treat it
/// as a token and a mangled one is detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// Continue strictly after this id.
    pub after_sandbox_id: String,
    /// The last row's `allocated_at` (0 if never allocated), for listings ordered by it.
    pub after_allocated_at: Option<i64>,
}

impl ListCursor {
    const PREFIX: &'static str = "v1:";

    /// A position after the row `sandbox_id`.
    pub fn after(sandbox_id: &str) -> Self {
        Self {
            after_sandbox_id: sandbox_id.to_owned(),
            after_allocated_at: None,
        }
    }

    /// The token clients send back.
    pub fn encode(&self) -> String {
        let at = self
            .after_allocated_at
            .map_or_else(String::new, |at| at.to_string());
        URL_SAFE_NO_PAD.encode(format!("{}{at}:{}", Self::PREFIX, self.after_sandbox_id))
    }

    /// Parses a token from [`Self::encode`]; anything else is a validation error.
    pub fn decode(token: &str) -> Result<Self, ValidationError> {
        let invalid = || ValidationError::new("cursor", "is not a cursor this service issued");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let rest = text.strip_prefix(Self::PREFIX).ok_or_else(invalid)?;
        let (at, id) = rest.split_once(':').ok_or_else(invalid)?;
        let after_allocated_at = match at {
            "" => None,
            digits => Some(digits.parse::<i64>().map_err(|_| invalid())?),
        };
        let id = SandboxId::parse("cursor", id).map_err(|_| invalid())?;
        Ok(Self {
            after_sandbox_id: id.as_str().to_owned(),
            after_allocated_at,
        })
    }
}
