//! A provider in memory, for `sandbox-broker demo` (and tests): it behaves like a small CSP
//! whose pool changes, so sync, stale marking and cleanup visibly do something.
//!
//! Rule: it starts with the demo pool; every listing after the first adds one new sandbox
//! and drops the newest of the original ones (which the broker then marks stale); deleting
//! removes the account.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

pub mod server;

use super::{ProviderClient, ProviderError, ProviderListing, ProviderSandbox};
use crate::domain::{ExternalId, SandboxId, SandboxName};

/// The simulated provider.
pub struct SimulatedProvider {
    state: Mutex<State>,
}

struct State {
    /// Accounts by id.
    accounts: BTreeMap<u64, ProviderSandbox>,
    /// Ids of the original accounts not yet dropped, oldest first.
    original: Vec<u64>,
    listings: u64,
    next_id: u64,
}

impl SimulatedProvider {
    /// A provider holding `pool`.
    pub fn new(pool: Vec<ProviderSandbox>) -> Self {
        let mut accounts = BTreeMap::new();
        for sandbox in pool {
            if let Ok(id) = sandbox.sandbox_id.as_str().parse::<u64>() {
                accounts.insert(id, sandbox);
            }
        }
        let original: Vec<u64> = accounts.keys().copied().collect();
        let next_id = original.last().map_or(1, |last| last + 1);
        Self {
            state: Mutex::new(State {
                accounts,
                original,
                listings: 0,
                next_id,
            }),
        }
    }

    /// How many accounts it has now.
    pub fn len(&self) -> usize {
        self.lock().accounts.len()
    }

    /// Whether it holds the account whose provider id is `external_id`.
    pub fn has_account(&self, external_id: &str) -> bool {
        self.lock()
            .accounts
            .values()
            .any(|account| account.external_id.as_str() == external_id)
    }

    /// Whether it has no account.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A simulated account `id` named `name`.
pub fn account(id: u64, name: &str, sfdc_account_id: Option<String>) -> Option<ProviderSandbox> {
    Some(ProviderSandbox {
        sandbox_id: SandboxId::parse("csp_id", &id.to_string()).ok()?,
        name: SandboxName::parse("name", name).ok()?,
        external_id: ExternalId::parse(
            "id",
            &format!("identity/accounts/00000000-0000-4000-8000-{id:012}"),
        )
        .ok()?,
        sfdc_account_id,
        created_at: None,
    })
}

#[async_trait]
impl ProviderClient for SimulatedProvider {
    async fn list_sandboxes(&self) -> Result<ProviderListing, ProviderError> {
        let mut state = self.lock();
        state.listings += 1;
        if state.listings > 1 {
            let id = state.next_id;
            state.next_id += 1;
            if let Some(new) = account(id, &format!("lab-new-{id}"), None) {
                state.accounts.insert(id, new);
            }
            if let Some(dropped) = state.original.pop() {
                state.accounts.remove(&dropped);
            }
        }
        Ok(ProviderListing {
            sandboxes: state.accounts.values().cloned().collect(),
            skipped: 0,
        })
    }

    async fn delete_sandbox(&self, external_id: &str) -> Result<(), ProviderError> {
        let mut state = self.lock();
        state
            .accounts
            .retain(|_, account| account.external_id.as_str() != external_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pool_changes_between_listings_and_deletes_remove_accounts() {
        let provider = SimulatedProvider::new(
            (1..=3)
                .filter_map(|id| account(id, &format!("lab-{id}"), None))
                .collect(),
        );

        let first = provider.list_sandboxes().await.unwrap();
        let second = provider.list_sandboxes().await.unwrap();
        provider
            .delete_sandbox(first.sandboxes[0].external_id.as_str())
            .await
            .unwrap();

        let ids = |l: &ProviderListing| {
            l.sandboxes
                .iter()
                .map(|s| s.sandbox_id.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&first), ["1", "2", "3"]);
        assert_eq!(
            ids(&second),
            ["1", "2", "4"],
            "one new, the newest original dropped"
        );
        assert_eq!(provider.len(), 2);
    }
}
