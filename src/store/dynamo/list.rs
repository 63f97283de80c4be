//! The admin list on DynamoDB: one page of matching sandbox rows and a cursor.
//!
//! Rule: the cursor names the last row *returned*, never DynamoDB's own page end, so
//! stopping mid-page skips nothing; following cursors visits every matching row once.
//! One request evaluates at most `list_evaluate_max` items: when a filter matches few of
//! them it answers what it found (perhaps nothing) with a cursor after the last row it
//! evaluated, so a stranger's filter can never turn into a whole-table read.
//! A status filter reads `StatusIndex`, a student filter `TrackIndex`, otherwise the table
//! is scanned with consistent reads.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::Select;

use super::DynamoStore;
use super::calls::Budget;
use super::error::DynamoError;
use super::item::{AttributeValuesExt, Item, SANDBOX_PREFIX, n, s};
use super::schema::{LAB_INDEX, STATUS_INDEX, STATUS_NAME_INDEX};
use crate::domain::time::EpochSecs;
use crate::domain::{NamePrefix, Sandbox, SandboxStatus};
use crate::store::{ListCursor, ListQuery, PoolStats, SandboxPage, StoreError};

/// Items DynamoDB evaluates per page (one Query or Scan call) while looking for matches.
const EVALUATE_PER_PAGE: i32 = 200;

/// Which access path a listing uses.
enum Path<'q> {
    Status(&'q str),
    Lab(&'q str),
    Scan,
}

impl DynamoStore {
    /// One page of rows matching `query`.
    pub(super) async fn list_page(&self, query: &ListQuery) -> Result<SandboxPage, StoreError> {
        let path = match (&query.status, &query.holder) {
            (Some(status), _) => Path::Status(status.as_str()),
            (None, Some(holder)) => Path::Lab(holder.as_str()),
            (None, None) => Path::Scan,
        };
        let mut start = query
            .cursor
            .as_ref()
            .map(|cursor| start_key(&path, cursor))
            .transpose()?;
        let budget = self.calls.budget();
        let mut rows: Vec<Sandbox> = Vec::with_capacity(query.limit + 1);
        let mut evaluated = 0usize;
        // The last sandbox row of the last whole page read: where a short page resumes.
        let mut evaluated_up_to: Option<ListCursor> = None;
        while rows.len() <= query.limit {
            let (items, next) = self.read_page(&budget, &path, start.take()).await?;
            // A page evaluates up to its limit, matching or not (a scan's filter drops
            // the table's other items after reading them).
            evaluated += EVALUATE_PER_PAGE.unsigned_abs() as usize;
            for item in &items {
                if let Some(row) = self.full_row(&budget, item).await? {
                    evaluated_up_to = Some(cursor_for(&path, &row));
                    if query.matches(&row) {
                        rows.push(row);
                        if rows.len() > query.limit {
                            break;
                        }
                    }
                }
            }
            match next {
                Some(_) if rows.len() > query.limit => break,
                Some(_) if evaluated >= self.list_evaluate_max && evaluated_up_to.is_some() => {
                    rows.truncate(query.limit);
                    return Ok(SandboxPage {
                        sandboxes: rows,
                        next: evaluated_up_to,
                    });
                }
                Some(key) => start = Some(key),
                None => break,
            }
        }
        let more = rows.len() > query.limit;
        rows.truncate(query.limit);
        let next = if more {
            rows.last().map(|last| cursor_for(&path, last))
        } else {
            None
        };
        Ok(SandboxPage {
            sandboxes: rows,
            next,
        })
    }

    async fn read_page(
        &self,
        budget: &Budget,
        path: &Path<'_>,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let (items, last) = match path {
            Path::Scan => {
                let scan = self
                    .client()
                    .scan()
                    .table_name(&self.table)
                    .consistent_read(true)
                    .filter_expression("begins_with(PK, :sbx)")
                    .expression_attribute_values(":sbx", s(SANDBOX_PREFIX))
                    .limit(EVALUATE_PER_PAGE)
                    .set_exclusive_start_key(start);
                let page = self
                    .calls
                    .send(budget, || self.calls.wire.send(&scan))
                    .await
                    .map_err(DynamoError::into_store_error)?;
                (page.items.unwrap_or_default(), page.last_evaluated_key)
            }
            Path::Status(value) | Path::Lab(value) => {
                let (index, attribute) = match path {
                    Path::Status(_) => (STATUS_INDEX, "status"),
                    _ => (LAB_INDEX, "allocated_to_track"),
                };
                let query = self
                    .client()
                    .query()
                    .table_name(&self.table)
                    .index_name(index)
                    .key_condition_expression("#k = :v")
                    .expression_attribute_names("#k", attribute)
                    .expression_attribute_values(":v", s(*value))
                    .limit(EVALUATE_PER_PAGE)
                    .set_exclusive_start_key(start);
                let page = self
                    .calls
                    .send(budget, || self.calls.wire.send(&query))
                    .await
                    .map_err(DynamoError::into_store_error)?;
                (page.items.unwrap_or_default(), page.last_evaluated_key)
            }
        };
        Ok((items, last.filter(|key| !key.is_empty())))
    }

    /// The row an item stands for; an index that does not project every attribute (a table
    /// made by other tooling) is completed with a consistent read. Non-sandbox items are skipped.
    pub(super) async fn full_row(
        &self,
        budget: &Budget,
        item: &Item,
    ) -> Result<Option<Sandbox>, StoreError> {
        if !item
            .text("PK")
            .is_some_and(|pk| pk.starts_with(SANDBOX_PREFIX))
        {
            return Ok(None);
        }
        match Sandbox::try_from(item) {
            Ok(row) => Ok(Some(row)),
            Err(_) => {
                let id = item
                    .text("PK")
                    .and_then(|pk| pk.strip_prefix(SANDBOX_PREFIX))
                    .unwrap_or_default();
                self.row(budget, id).await
            }
        }
    }
}

/// The `ExclusiveStartKey` that resumes after the cursor's row on `path`.
fn start_key(path: &Path<'_>, cursor: &ListCursor) -> Result<Item, StoreError> {
    let mut key: Item = HashMap::from([
        (
            "PK".to_owned(),
            s(format!("{SANDBOX_PREFIX}{}", cursor.after_sandbox_id)),
        ),
        ("SK".to_owned(), s(super::item::SANDBOX_SORT_KEY)),
    ]);
    let index_key = match path {
        Path::Scan => None,
        Path::Status(value) => Some(("status", *value)),
        Path::Lab(value) => Some(("allocated_to_track", *value)),
    };
    if let Some((attribute, value)) = index_key {
        let at = cursor.after_allocated_at.ok_or(StoreError::InvalidCursor)?;
        key.insert(attribute.to_owned(), s(value));
        key.insert("allocated_at".to_owned(), n(at));
    } else if cursor.after_allocated_at.is_some() {
        return Err(StoreError::InvalidCursor);
    }
    Ok(key)
}

/// The cursor after `row` on `path`.
fn cursor_for(path: &Path<'_>, row: &Sandbox) -> ListCursor {
    ListCursor {
        after_sandbox_id: row.sandbox_id.clone(),
        after_allocated_at: match path {
            Path::Scan => None,
            _ => Some(row.allocated_at.map_or(0, EpochSecs::get)),
        },
    }
}

impl DynamoStore {
    /// Counts every status through `StatusIndex` (see [`crate::store::AnalyticsStore::stats`]).
    pub(super) async fn pool_stats(&self) -> Result<PoolStats, StoreError> {
        let budget = self.calls.budget();
        let budget = &budget;
        let counts = futures::future::try_join_all(SandboxStatus::ALL.map(|status| async move {
            Ok::<_, StoreError>((status, self.count_status(budget, status).await?))
        }))
        .await?;
        let mut stats = PoolStats::default();
        for (status, count) in counts {
            stats.adjust(status, i64::try_from(count).unwrap_or(i64::MAX));
        }
        Ok(stats)
    }

    /// Counts available names by prefix on `StatusNameIndex`, a keys-only index (see
    /// [`crate::store::AnalyticsStore::available_by_prefix`]).
    pub(super) async fn count_available_by_prefix(
        &self,
        prefixes: &[NamePrefix],
    ) -> Result<Vec<u64>, StoreError> {
        let budget = self.calls.budget();
        let mut counts = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            let query = self
                .client()
                .query()
                .table_name(&self.table)
                .index_name(STATUS_NAME_INDEX)
                .key_condition_expression("#s = :available AND begins_with(#n, :prefix)")
                .expression_attribute_names("#s", "status")
                .expression_attribute_names("#n", "name")
                .expression_attribute_values(":available", s(SandboxStatus::Available.as_str()))
                .expression_attribute_values(":prefix", s(prefix.as_str()));
            counts.push(self.count(&budget, query, u64::MAX).await?);
        }
        Ok(counts)
    }

    /// Counts one status through `StatusIndex`, every page.
    pub(super) async fn count_status(
        &self,
        budget: &Budget,
        status: SandboxStatus,
    ) -> Result<u64, StoreError> {
        self.count(budget, self.in_status(status), u64::MAX).await
    }

    /// Counts what `query` matches, page by page, stopping once the count reaches `enough`.
    pub(super) async fn count(
        &self,
        budget: &Budget,
        query: QueryFluentBuilder,
        enough: u64,
    ) -> Result<u64, StoreError> {
        let mut total = 0u64;
        let mut start = None;
        loop {
            let page_query = query
                .clone()
                .select(Select::Count)
                .set_exclusive_start_key(start);
            let page = self
                .calls
                .send(budget, || self.calls.wire.send(&page_query))
                .await
                .map_err(DynamoError::into_store_error)?;
            total += u64::try_from(page.count()).unwrap_or(0);
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() && total < enough => start = Some(key),
                _ => return Ok(total),
            }
        }
    }
}
