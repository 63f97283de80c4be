//! The demo: a few hundred sandboxes under several name prefixes (some with an SFDC id)
//! at a simulated provider, and job intervals short enough to watch them work.

use std::time::Duration;

use crate::config::Config;
use crate::provider::ProviderSandbox;
use crate::provider::simulated::account;

/// Name prefixes of the demo pool, so `X-Sandbox-Name-Prefix` can be tried at once.
pub const DEMO_PREFIXES: [&str; 3] = ["lab-adventure-", "lab-dns-", "lab-security-"];
/// Sandboxes per prefix.
pub const DEMO_PER_PREFIX: u64 = 100;

/// The simulated provider's starting accounts: ids from 2 000 000, every other one with an
/// SFDC id.
pub fn demo_accounts() -> Vec<ProviderSandbox> {
    let mut accounts = Vec::new();
    for (p, prefix) in (0u64..).zip(DEMO_PREFIXES) {
        for n in 1..=DEMO_PER_PREFIX {
            let id = 2_000_000 + p * 1000 + n;
            let sfdc = (n % 2 == 0).then(|| format!("001DEMO{id:08}"));
            accounts.extend(account(id, &format!("{prefix}{n:04}"), sfdc));
        }
    }
    accounts
}

/// Job intervals for the demo: short, so sync, cleanup and expiry visibly happen.
pub fn speed_up_jobs(config: &mut Config) {
    config.jobs.sync_interval = Duration::from_secs(30);
    config.jobs.cleanup_interval = Duration::from_secs(15);
    config.jobs.auto_expiry_interval = Duration::from_secs(30);
    config.jobs.cleanup_batch_delay = Duration::from_millis(500);
}
