//! The webhooks' settings.

use std::time::Duration;

use clap::Args;

use crate::config_values::{parse_fractional_seconds, parse_seconds};

/// Where deliveries may go, how long each may take, and how many endpoints there may be.
#[derive(Debug, Clone, Args)]
pub struct WebhookConfig {
    /// Allow endpoints whose host resolves to a loopback, private or link-local address
    /// (off: such a URL is refused, so it cannot reach into the service's own network).
    #[arg(long, env = "ALLOW_PRIVATE_WEBHOOKS", value_name = "ALLOW_PRIVATE_WEBHOOKS", default_value = "false", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_private_webhooks: bool,

    /// Hours a delivery is retried (exponential backoff with jitter) before it is marked failed.
    #[arg(long, env = "WEBHOOK_RETRY_HOURS", value_name = "WEBHOOK_RETRY_HOURS", default_value = "24", value_parser = clap::value_parser!(u32).range(1..=720))]
    pub webhook_retry_hours: u32,

    /// Seconds one delivery attempt may take, connecting included.
    #[arg(long, env = "WEBHOOK_TIMEOUT_SEC", value_name = "WEBHOOK_TIMEOUT_SEC", default_value = "10", value_parser = parse_seconds)]
    pub webhook_timeout: Duration,

    /// Seconds between runs of the webhook dispatcher (fans events out, delivers what is
    /// due; fractions allowed). One instance of a fleet runs it at a time.
    #[arg(long, env = "WEBHOOK_DISPATCH_INTERVAL_SEC", value_name = "WEBHOOK_DISPATCH_INTERVAL_SEC", default_value = "1", value_parser = parse_fractional_seconds)]
    pub webhook_dispatch_interval: Duration,

    /// Webhook endpoints at most.
    #[arg(long, env = "MAX_WEBHOOKS", value_name = "MAX_WEBHOOKS", default_value = "50", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_webhooks: u32,
}

impl WebhookConfig {
    /// How long a delivery is retried, as the outbox's rules take it.
    pub fn retry_policy(&self) -> crate::domain::webhooks::outbox::RetryPolicy {
        crate::domain::webhooks::outbox::RetryPolicy {
            give_up_after_secs: i64::from(self.webhook_retry_hours) * 3600,
        }
    }
}
