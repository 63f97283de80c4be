//! The Infoblox CSP provider client (docs/api.md, *Outbound calls* and cleanup).
//!
//! Rule: one `reqwest::Client`, built once with the configured connect and read timeouts
//! and a user agent; `Authorization: Token <CSP_API_TOKEN>`; each HTTP outcome maps to one
//! [`ProviderError`] variant in one `match`.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{ProviderClient, ProviderError, ProviderListing, ProviderSandbox};
use crate::domain::{ExternalId, SandboxId, SandboxName};

/// How to reach the CSP API.
#[derive(Debug, Clone)]
pub struct CspSettings {
    /// `CSP_BASE_URL`, e.g. `https://csp.infoblox.com/v2`.
    pub base_url: String,
    /// `CSP_API_TOKEN`.
    pub token: SecretString,
    /// `CSP_TIMEOUT_CONNECT_SEC`.
    pub connect_timeout: Duration,
    /// `CSP_TIMEOUT_READ_SEC`: the whole request, body included.
    pub read_timeout: Duration,
    /// `ALLOW_HTTP_UPSTREAMS`: plain `http://` allowed (a local simulator).
    pub allow_http: bool,
}

/// The CSP client.
pub struct CspClient {
    http: reqwest::Client,
    base_url: String,
    token: SecretString,
}

impl std::fmt::Debug for CspClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CspClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl CspClient {
    /// Builds the HTTP client once.
    pub fn new(settings: &CspSettings) -> Result<Self, ProviderError> {
        let http = super::outbound_client(
            settings.connect_timeout,
            settings.read_timeout,
            settings.allow_http,
        )?;
        Ok(Self {
            http,
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            token: settings.token.clone(),
        })
    }

    fn authorization(&self) -> String {
        format!("Token {}", self.token.expose_secret())
    }
}

/// The error for a non-success status.
pub(crate) fn status_error(status: StatusCode, headers: &HeaderMap) -> ProviderError {
    match status {
        StatusCode::NOT_FOUND => ProviderError::NotFound,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            ProviderError::Unauthorized(status.as_u16())
        }
        StatusCode::TOO_MANY_REQUESTS => ProviderError::RateLimited {
            retry_after: retry_after(headers),
        },
        status if status.is_server_error() => {
            ProviderError::Unavailable(format!("HTTP {status}").into())
        }
        status => ProviderError::Other(format!("HTTP {status}")),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare here and treated as absent).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// A connection failure or timeout: the provider's passing trouble.
pub(crate) fn transport_error(err: reqwest::Error) -> ProviderError {
    ProviderError::Unavailable(Box::new(err))
}

/// The JSON body of a successful answer; a non-success status maps through
/// [`status_error`], a body cut short by the timeout is transient, an unreadable one a refusal.
pub(crate) async fn success_json(
    response: reqwest::Response,
    what: &str,
) -> Result<Value, ProviderError> {
    let status = response.status();
    if !status.is_success() {
        return Err(status_error(status, response.headers()));
    }
    response.json().await.map_err(|err| {
        if err.is_timeout() {
            transport_error(err)
        } else {
            ProviderError::Other(format!("unreadable {what}: {err}"))
        }
    })
}

/// Entries asked for per page of a CSP list.
const LIST_PAGE_SIZE: usize = 1000;
/// Pages read at most before a list is given up as endless (a million entries).
const MAX_LIST_PAGES: usize = 1000;

/// Every entry of a paged CSP list (`{"results": [...]}`): `page(query)` fetches the page
/// that `query` (`_offset=…&_limit=…`, the CSP's paging parameters) names. Pages are read
/// until one is empty or brings no entry not seen already — a server that caps its pages
/// below `_limit` is still read to the end, and one that ignores the parameters (answering
/// the whole list every time) is read twice, not forever. Any failing page fails the
/// whole list: a partial list is never returned.
pub(crate) async fn every_page<F, Fut>(what: &str, page: F) -> Result<Vec<Value>, ProviderError>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Value, ProviderError>>,
{
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    let mut offset = 0;
    for _ in 0..MAX_LIST_PAGES {
        let body = page(format!("_offset={offset}&_limit={LIST_PAGE_SIZE}")).await?;
        let Some(results) = body.get("results").and_then(Value::as_array) else {
            return Err(ProviderError::Other(format!(
                "the {what} has no `results` array"
            )));
        };
        let before = entries.len();
        entries.extend(
            results
                .iter()
                .filter(|entry| seen.insert(entry_key(entry)))
                .cloned(),
        );
        if entries.len() == before {
            return Ok(entries);
        }
        offset += results.len();
    }
    Err(ProviderError::Other(format!(
        "the {what} did not end within {MAX_LIST_PAGES} pages"
    )))
}

/// What tells two entries of a list apart: their `id`, else the whole entry.
fn entry_key(entry: &Value) -> String {
    match entry.get("id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => entry.to_string(),
    }
}

/// The UUID of a CSP id such as `identity/accounts/<uuid>`: the part after the last `/`.
pub fn account_uuid(external_id: &str) -> Option<&str> {
    let uuid = external_id.rsplit('/').next()?.trim();
    let usable = !uuid.is_empty()
        && uuid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    usable.then_some(uuid)
}

/// Maps one `results` entry; `None` when it is not an active sandbox, `Some(Err)` when it
/// is one but lacks a usable `csp_id` or `name`.
fn map_account(account: &Value) -> Option<Result<ProviderSandbox, ()>> {
    let text = |key: &str| account.get(key).and_then(Value::as_str);
    if text("account_type") != Some("sandbox") || text("state") != Some("active") {
        return None;
    }
    let csp_id = match account.get("csp_id") {
        Some(Value::Number(n)) => n.as_u64().map(|id| id.to_string()),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.clone())
        }
        _ => None,
    };
    let mapped = (|| {
        Some(ProviderSandbox {
            sandbox_id: SandboxId::parse("csp_id", csp_id.as_deref()?).ok()?,
            name: SandboxName::parse("name", text("name")?).ok()?,
            external_id: ExternalId::parse("id", text("id")?).ok()?,
            sfdc_account_id: text("sfdc_account_id")
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
            created_at: text("created_at").and_then(parse_rfc3339),
        })
    })();
    Some(mapped.ok_or(()))
}

/// Epoch seconds of an RFC 3339 timestamp such as `2025-03-27T16:53:47.605459Z`.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut date_parts = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let (clock, offset_seconds) = match time.find(['Z', 'z', '+', '-']) {
        Some(at) => {
            let (clock, zone) = time.split_at(at);
            let offset = match zone {
                "Z" | "z" => 0,
                _ => {
                    let sign = if zone.starts_with('-') { -1 } else { 1 };
                    let (h, m) = zone[1..].split_once(':')?;
                    sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
                }
            };
            (clock, offset)
        }
        None => (time, 0),
    };
    let mut clock_parts = clock.splitn(3, ':');
    let hour: i64 = clock_parts.next()?.parse().ok()?;
    let minute: i64 = clock_parts.next()?.parse().ok()?;
    let second: i64 = clock_parts.next()?.split('.').next()?.parse().ok()?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds)
}

#[async_trait]
impl ProviderClient for CspClient {
    /// Every page of the account list ([`every_page`]); a page that fails fails the
    /// whole listing, so an incomplete listing is never applied.
    async fn list_sandboxes(&self) -> Result<ProviderListing, ProviderError> {
        let url = format!("{}/current_user/accounts", self.base_url);
        let accounts = every_page("account list", |paging| {
            let request = self
                .http
                .get(format!("{url}?{paging}"))
                .header(AUTHORIZATION, self.authorization());
            async move {
                let response = request.send().await.map_err(transport_error)?;
                success_json(response, "account list").await
            }
        })
        .await?;
        let mut listing = ProviderListing::default();
        for mapped in accounts.iter().filter_map(map_account) {
            match mapped {
                Ok(sandbox) => listing.sandboxes.push(sandbox),
                Err(()) => listing.skipped += 1,
            }
        }
        Ok(listing)
    }

    async fn delete_sandbox(&self, external_id: &str) -> Result<(), ProviderError> {
        let uuid = account_uuid(external_id).ok_or_else(|| {
            ProviderError::Other(format!("external id {external_id:?} names no account uuid"))
        })?;
        let response = self
            .http
            .delete(format!("{}/sandbox/accounts/{uuid}", self.base_url))
            .header(AUTHORIZATION, self.authorization())
            .send()
            .await
            .map_err(transport_error)?;
        match response.status() {
            StatusCode::OK | StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => Ok(()),
            status if status.is_success() => Ok(()),
            status => Err(status_error(status, response.headers())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps_become_epoch_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2025-03-27T16:53:47.605459Z"),
            Some(1_743_094_427)
        );
        assert_eq!(
            parse_rfc3339("2025-03-27T18:53:47+02:00"),
            Some(1_743_094_427)
        );
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        for bad in ["", "2025-13-01T00:00:00Z", "yesterday", "2025-03-27"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    /// Serves `entries` in pages of at most `cap`, as a server that caps `_limit` does;
    /// `ignore_paging` answers everything every time. Returns the pages asked for.
    async fn paged(entries: &[Value], cap: usize, ignore_paging: bool) -> (Vec<Value>, usize) {
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let listed = every_page("test list", |query| {
            asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let offset: usize = query
                .strip_prefix("_offset=")
                .and_then(|rest| rest.split('&').next())
                .and_then(|n| n.parse().ok())
                .unwrap();
            let page: Vec<Value> = if ignore_paging {
                entries.to_vec()
            } else {
                entries.iter().skip(offset).take(cap).cloned().collect()
            };
            async move { Ok(serde_json::json!({ "results": page })) }
        })
        .await
        .unwrap();
        (listed, asked.into_inner())
    }

    #[tokio::test]
    async fn every_page_is_read_to_the_end_whatever_the_server_caps_or_ignores() {
        let entries: Vec<Value> = (0..250)
            .map(|n| serde_json::json!({"id": format!("identity/accounts/{n}")}))
            .collect();
        let (listed, pages) = paged(&entries, 100, false).await;
        assert_eq!(
            (listed, pages),
            (entries.clone(), 4),
            "3 pages and the empty one"
        );
        let (listed, pages) = paged(&entries, 1000, true).await;
        assert_eq!(
            (listed, pages),
            (entries.clone(), 2),
            "the whole list twice, not forever"
        );
        let (listed, pages) = paged(&[], 100, false).await;
        assert_eq!((listed.len(), pages), (0, 1));
        let failing = every_page("test list", |_| async {
            Err::<Value, _>(ProviderError::Unavailable("page 2 timed out".into()))
        })
        .await;
        assert!(failing.is_err(), "a failing page fails the list");
        let shapeless = every_page("test list", |_| async {
            Ok(serde_json::json!({"items": []}))
        })
        .await;
        assert!(matches!(shapeless, Err(ProviderError::Other(_))));
    }

    #[test]
    fn the_account_uuid_is_the_last_path_segment() {
        assert_eq!(
            account_uuid("identity/accounts/1e96e538-aa"),
            Some("1e96e538-aa")
        );
        assert_eq!(account_uuid("1e96e538"), Some("1e96e538"));
        assert_eq!(account_uuid("identity/accounts/"), None);
        assert_eq!(account_uuid("identity/accounts/../x?y"), None);
    }
}
