//! Reading every page of a Query or a Scan: DynamoDB answers at most 1 MB per call and
//! says where to go on; these follow it to the end under one call budget.

use std::future::Future;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder;

use super::DynamoStore;
use super::calls::Budget;
use super::error::DynamoError;
use super::item::Item;
use crate::store::StoreError;

/// One page's items and the key the next page starts after (none or empty: the last).
type Page = (Option<Vec<Item>>, Option<Item>);

impl DynamoStore {
    /// Every item `query` matches, page after page.
    pub(super) async fn query_every_page(
        &self,
        budget: &Budget,
        query: QueryFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        self.every_page(budget, |start| {
            let page = query.clone().set_exclusive_start_key(start);
            async move {
                let page = page.send().await?;
                Ok((page.items, page.last_evaluated_key))
            }
        })
        .await
    }

    /// Every item `scan` matches, page after page.
    pub(super) async fn scan_every_page(
        &self,
        budget: &Budget,
        scan: ScanFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        self.every_page(budget, |start| {
            let page = scan.clone().set_exclusive_start_key(start);
            async move {
                let page = page.send().await?;
                Ok((page.items, page.last_evaluated_key))
            }
        })
        .await
    }

    /// The paging loop both share: `page(start)` reads the page after `start`, each
    /// call (and its retries) under `budget`.
    async fn every_page<E, Fut>(
        &self,
        budget: &Budget,
        page: impl Fn(Option<Item>) -> Fut,
    ) -> Result<Vec<Item>, StoreError>
    where
        Fut: Future<Output = Result<Page, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let (found, next) = self
                .calls
                .send(budget, || page(start.clone()))
                .await
                .map_err(DynamoError::into_store_error)?;
            items.extend(found.unwrap_or_default());
            match next {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }
}
