//! The demo pool: a few hundred sandboxes under several name prefixes, some with an SFDC id.

use crate::domain::{ExternalId, NewSandbox, SandboxId, SandboxName};

/// Name prefixes of the demo pool, so `X-Sandbox-Name-Prefix` can be tried at once.
pub const DEMO_PREFIXES: [&str; 3] = ["lab-adventure-", "lab-dns-", "lab-security-"];
/// Sandboxes per prefix.
pub const DEMO_PER_PREFIX: usize = 100;

/// The demo pool's rows: ids from 2_000_000, every other one with an SFDC id.
pub fn demo_pool() -> Vec<NewSandbox> {
    let mut rows = Vec::with_capacity(DEMO_PREFIXES.len() * DEMO_PER_PREFIX);
    for (p, prefix) in DEMO_PREFIXES.iter().enumerate() {
        for n in 1..=DEMO_PER_PREFIX {
            let id = 2_000_000 + p * 1000 + n;
            let uuid = format!("00000000-0000-4000-8000-{id:012}");
            rows.push(NewSandbox {
                sandbox_id: text(SandboxId::parse("id", &id.to_string())),
                name: text(SandboxName::parse("name", &format!("{prefix}{n:04}"))),
                external_id: text(ExternalId::parse(
                    "id",
                    &format!("identity/accounts/{uuid}"),
                )),
                sfdc_account_id: (n % 2 == 0).then(|| format!("001DEMO{id:08}")),
            });
        }
    }
    rows
}

fn text<T>(parsed: Result<T, crate::domain::ValidationError>) -> T {
    match parsed {
        Ok(value) => value,
        Err(err) => unreachable!("demo data is valid by construction: {err}"),
    }
}
