//! The dashboard's reads on DynamoDB: the allocation facts usage analytics fold
//! ([`crate::domain::usage`]) and the NIOSXaaS history items, each a paged scan.

use super::DynamoStore;
use super::item::{NIOSXAAS_PREFIX, SANDBOX_PREFIX, s};
use crate::domain::time::EpochSecs;
use crate::domain::usage::AllocationFacts;
use crate::domain::{NiosxaasHistory, Sandbox};
use crate::store::StoreError;

impl DynamoStore {
    /// The allocation facts of every sandbox row with a lab or an allocation time (see
    /// [`crate::store::AnalyticsStore::allocation_facts`]), from a scan of only those attributes.
    pub(super) async fn scan_allocation_facts(&self) -> Result<Vec<AllocationFacts>, StoreError> {
        let scan = self
            .client()
            .scan()
            .table_name(&self.table)
            .filter_expression(
                "begins_with(PK, :sbx) AND (attribute_exists(track_name) OR attribute_exists(allocated_at))",
            )
            // What the row decoder needs (key, name, status) and what the facts read, so
            // the facts come from the one decoder (its sentinels, its blank rules).
            .projection_expression("PK, #n, #s, track_name, allocated_at, deletion_requested_at")
            .expression_attribute_names("#n", "name")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":sbx", s(SANDBOX_PREFIX));
        let mut facts = Vec::new();
        for item in self.scan_every_page(&self.calls.budget(), scan).await? {
            // The table is shared (with the Python service during a migration): a row this
            // service cannot read is left out of the analytics, said once in the log, rather
            // than failing the dashboard for every other row.
            match Sandbox::try_from(&item) {
                Ok(row) => facts.extend(AllocationFacts::of(&row)),
                Err(err) => tracing::warn!(error = %err, "a row left out of the usage analytics"),
            }
        }
        Ok(facts)
    }

    /// Every `NIOSXAAS#` history item not expired by `now` (DynamoDB's TTL sweep lags, so
    /// an expired item is left out here as on the embedded store).
    pub(super) async fn scan_niosxaas_histories(
        &self,
        now: EpochSecs,
    ) -> Result<Vec<NiosxaasHistory>, StoreError> {
        let scan = self
            .client()
            .scan()
            .table_name(&self.table)
            .filter_expression("begins_with(PK, :history)")
            .expression_attribute_values(":history", s(NIOSXAAS_PREFIX));
        let mut histories = Vec::new();
        for item in self.scan_every_page(&self.calls.budget(), scan).await? {
            let history = NiosxaasHistory::try_from(&item)
                .map_err(|err| StoreError::Internal(Box::new(err)))?;
            if history.ttl > now {
                histories.push(history);
            }
        }
        Ok(histories)
    }
}
