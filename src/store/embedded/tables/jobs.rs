//! Job leases and run records.

use std::time::Duration;

use super::*;
use crate::domain::time::EpochMillis;

/// Every job's lease and last run.
pub(in crate::store::embedded) fn job_records(db: &Database) -> Result<Vec<JobRecord>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(JOBS).map_err(storage)?;
    let mut records = Vec::new();
    for entry in table.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        records.push(decode_job(key.value(), value.value())?);
    }
    Ok(records)
}

pub(super) fn decode_job(job: &str, bytes: &[u8]) -> Result<JobRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| {
        StoreError::Internal(format!("job record {job} cannot be decoded: {err}").into())
    })
}

impl Tables<'_> {
    pub(super) fn job(&self, job: &str) -> Result<Option<JobRecord>, StoreError> {
        let guard = self.jobs.read(self.txn)?.get(job).map_err(storage)?;
        guard
            .map(|value| decode_job(job, value.value()))
            .transpose()
    }

    pub(super) fn put_job(&mut self, record: &JobRecord) -> Result<(), StoreError> {
        let bytes = encode(record)?;
        self.jobs
            .write(self.txn)?
            .insert(record.job.as_str(), bytes.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Takes or renews `job`'s lease unless another holder's is still running.
    pub(in crate::store::embedded) fn acquire_lease(
        &mut self,
        job: &str,
        instance: &str,
        now: EpochMillis,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        let mut record = self.job(job)?.unwrap_or_else(|| JobRecord {
            job: job.to_owned(),
            ..JobRecord::default()
        });
        if let LeaseDecision::HeldBy { instance, until_ms } = lease::decide(
            record.instance.as_deref(),
            record.lease_expires_at_ms,
            instance,
            now,
        ) {
            return Ok(LeaseOutcome::Held { instance, until_ms });
        }
        record.instance = Some(instance.to_owned());
        record.lease_expires_at_ms = now.after(ttl);
        self.put_job(&record)?;
        Ok(LeaseOutcome::Acquired)
    }

    /// Records a run and, if `holder` still holds the lease, ends it.
    pub(in crate::store::embedded) fn finish_job_run(
        &mut self,
        run: JobRecord,
        instance: &str,
    ) -> Result<(), StoreError> {
        let mut record = self.job(&run.job)?.unwrap_or_else(|| JobRecord {
            job: run.job.clone(),
            ..JobRecord::default()
        });
        if lease::released_by(record.instance.as_deref(), instance) {
            record.instance = None;
            record.lease_expires_at_ms = EpochMillis::new(0);
        }
        record.last_started_at = run.last_started_at;
        record.last_finished_at = run.last_finished_at;
        record.last_outcome = run.last_outcome;
        record.last_counts = run.last_counts;
        record.next_run_at = run.next_run_at;
        self.put_job(&record)
    }
}
