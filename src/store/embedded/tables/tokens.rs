//! Lab tokens and what each holds.

use super::*;
use crate::domain::tokens::{self, LabToken, TokenUse};
use crate::store::Refusal;

/// How many [`TOKEN_HELD`] entries `token` has in `table`.
fn held_in(table: &impl ReadableTable<&'static str, ()>, token: &str) -> Result<u64, StoreError> {
    let start = format!("{token}\0");
    let end = format!("{token}\u{1}");
    let mut held = 0;
    for entry in table.range(start.as_str()..end.as_str()).map_err(storage)? {
        entry.map_err(storage)?;
        held += 1;
    }
    Ok(held)
}

/// Every token with what it holds, from one snapshot.
pub(in crate::store::embedded) fn token_uses(db: &Database) -> Result<Vec<TokenUse>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(TOKENS).map_err(storage)?;
    let held = txn.open_table(TOKEN_HELD).map_err(storage)?;
    let mut uses = Vec::new();
    for entry in table.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        let token = json::<LabToken>("token", key.value(), value.value())?;
        let held = held_in(&held, &token.id)?;
        uses.push(TokenUse { token, held });
    }
    Ok(uses)
}

impl Tables<'_> {
    fn every_token(&self) -> Result<Vec<LabToken>, StoreError> {
        let mut all = Vec::new();
        for entry in self.tokens.read(self.txn)?.iter().map_err(storage)? {
            let (key, value) = entry.map_err(storage)?;
            all.push(json::<LabToken>("token", key.value(), value.value())?);
        }
        Ok(all)
    }

    /// Keeps `token` unless the rules refuse it (see [`tokens::may_add`]).
    pub(in crate::store::embedded) fn add_token(
        &mut self,
        token: &LabToken,
        limit: usize,
        now: EpochSecs,
    ) -> Result<Result<(), Refusal>, StoreError> {
        if let Err(refused) = tokens::may_add(token, &self.every_token()?, limit, now) {
            return Ok(Err(refused.into()));
        }
        self.put_token(token)?;
        Ok(Ok(()))
    }

    pub(super) fn put_token(&mut self, token: &LabToken) -> Result<(), StoreError> {
        let bytes = encode(token)?;
        self.tokens
            .write(self.txn)?
            .insert(token.id.as_str(), bytes.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    fn token(&self, id: &str) -> Result<Option<LabToken>, StoreError> {
        let guard = self.tokens.read(self.txn)?.get(id).map_err(storage)?;
        guard
            .map(|value| json::<LabToken>("token", id, value.value()))
            .transpose()
    }

    /// Records that `id` was presented at `at`.
    pub(in crate::store::embedded) fn touch_token(
        &mut self,
        id: &str,
        at: EpochSecs,
    ) -> Result<(), StoreError> {
        if let Some(mut token) = self.token(id)?
            && token.last_used_at.is_none_or(|last| last < at)
        {
            token.last_used_at = Some(at);
            self.put_token(&token)?;
        }
        Ok(())
    }

    /// Revokes `id` at `now` (a repeat keeps the first time).
    pub(in crate::store::embedded) fn revoke_token(
        &mut self,
        id: &str,
        now: EpochSecs,
    ) -> Result<Option<LabToken>, StoreError> {
        let Some(mut token) = self.token(id)? else {
            return Ok(None);
        };
        if token.revoked_at.is_none() {
            token.revoked_at = Some(now);
            self.put_token(&token)?;
        }
        Ok(Some(token))
    }

    /// How many sandboxes `token` holds now.
    pub(in crate::store::embedded) fn held_by_token(&self, token: &str) -> Result<u64, StoreError> {
        held_in(self.token_held.read(self.txn)?, token)
    }
}
