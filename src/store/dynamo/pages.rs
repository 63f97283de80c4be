//! Reading every page of a Query or a Scan: DynamoDB answers at most 1 MB per call and
//! says where to go on; these follow it to the end under one call budget.

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder;

use super::DynamoStore;
use super::calls::Budget;
use super::error::DynamoError;
use super::item::Item;
use crate::store::StoreError;

impl DynamoStore {
    /// Every item `query` matches, page after page.
    pub(super) async fn query_every_page(
        &self,
        budget: &Budget,
        query: QueryFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page_query = query.clone().set_exclusive_start_key(start);
            let page = self
                .calls
                .send(budget, || page_query.clone().send())
                .await
                .map_err(DynamoError::into_store_error)?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// Every item `scan` matches, page after page.
    pub(super) async fn scan_every_page(
        &self,
        budget: &Budget,
        scan: ScanFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page_scan = scan.clone().set_exclusive_start_key(start);
            let page = self
                .calls
                .send(budget, || page_scan.clone().send())
                .await
                .map_err(DynamoError::into_store_error)?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }
}
