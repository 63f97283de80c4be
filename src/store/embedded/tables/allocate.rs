//! Allocation: an allocation key's sandbox, or the first available one at a name prefix.

use super::*;

/// Whether `row`, found under `request`'s allocation key, is still allocated to that key.
pub(super) fn still_held(request: &AllocationRequest, row: &Sandbox) -> bool {
    row.status == SandboxStatus::Allocated && request.key.holds(row)
}

impl Tables<'_> {
    /// The sandbox this allocation key still actively holds, if any.
    pub(super) fn active_allocation(
        &self,
        request: &AllocationRequest,
    ) -> Result<Option<Sandbox>, StoreError> {
        let Some(id) = self.key_holder(&request.key.encoded()) else {
            return Ok(None);
        };
        Ok(self.row(&id)?.filter(|row| still_held(request, row)))
    }

    /// The first available row whose name starts with `prefix`.
    pub(super) fn first_available(&self, prefix: &str) -> Result<Option<Sandbox>, StoreError> {
        // Without a prefix the first entry is the leftmost: redb reaches it without
        // comparing keys on the way down, which a range from "" does at every level.
        let first = if prefix.is_empty() {
            self.available.first()
        } else {
            self.available
                .range(prefix..)
                .map_err(storage)?
                .next()
                .transpose()
        }
        .map_err(storage)?;
        let id = first.and_then(|(key, id)| {
            key.value()
                .starts_with(prefix)
                .then(|| id.value().to_owned())
        });
        let Some(id) = id else { return Ok(None) };
        match self.row(&id)? {
            Some(row) if row.status == SandboxStatus::Available => Ok(Some(row)),
            _ => Err(StoreError::Internal(
                format!("available index names {id}, which is not available").into(),
            )),
        }
    }

    /// Replays the key's active allocation or takes the first matching available row.
    pub(in crate::store::embedded) fn allocate(
        &mut self,
        request: &AllocationRequest,
    ) -> Outcome<Allocation> {
        if let Some(sandbox) = self.active_allocation(request)? {
            return Ok(Ok(Allocation {
                sandbox,
                newly_allocated: false,
                conflicts: 0,
            }));
        }
        if let Some(token) = &request.token
            && !crate::domain::tokens::under_cap(self.held_by_token(&token.id)?, token.max_active)
        {
            return Ok(Err(Refusal::QuotaExceeded));
        }
        let prefix = request.name_prefix.as_ref().map_or("", |p| p.as_str());
        // The lab's reservation first, then the pool.
        let reserved = match &request.reservation {
            Some(reservation) => self.first_reserved(reservation)?,
            None => None,
        };
        let candidate = match reserved {
            Some(row) => Some(row),
            None => self.first_available(prefix)?,
        };
        let Some(old) = candidate else {
            return Ok(Err(Refusal::NoneAvailable));
        };
        // Read inside this write transaction, so the decision's expectation holds.
        let new = lifecycle::allocate(&old, &request.grant())
            .ok_or_else(|| {
                StoreError::Internal(
                    format!(
                        "the indexes name {}, which cannot be allocated",
                        old.sandbox_id
                    )
                    .into(),
                )
            })?
            .row;
        // The row's write puts its key in the index.
        self.put(Some(&old), &new)?;
        Ok(Ok(Allocation {
            sandbox: new,
            newly_allocated: true,
            conflicts: 0,
        }))
    }
}
