//! Authentication's settings: the tokens of each role and the failure throttle's limits.

use std::num::NonZeroU32;
use std::time::Duration;

use clap::Args;
use secrecy::{ExposeSecret, SecretString};

use crate::config_values::{ConfigError, parse_seconds};

/// The accepted tokens and how often an address may fail (docs/api.md, *Authentication*).
#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// Track token(s), comma-separated so a token can be rotated without downtime.
    #[arg(long, env = "BROKER_API_TOKEN", value_name = "BROKER_API_TOKEN", hide_env_values = true, value_parser = TokenList::parse)]
    pub api_token: Option<TokenList>,

    /// Admin token(s), comma-separated.
    #[arg(long, env = "BROKER_ADMIN_TOKEN", value_name = "BROKER_ADMIN_TOKEN", hide_env_values = true, value_parser = TokenList::parse)]
    pub admin_token: Option<TokenList>,

    /// Bearer token(s) `/metrics` requires, comma-separated. Unset: `/metrics` is open, so
    /// keep it off the public listener (terraform's ALB answers it 404).
    #[arg(long, env = "METRICS_TOKEN", value_name = "METRICS_TOKEN", hide_env_values = true, value_parser = TokenList::parse)]
    pub metrics_token: Option<TokenList>,

    /// Failed authentications a client address may make per AUTH_FAILURE_WINDOW_SEC; after
    /// that its requests to authenticated routes answer 429 until the window ends.
    #[arg(
        long,
        env = "AUTH_FAILURE_LIMIT",
        value_name = "AUTH_FAILURE_LIMIT",
        default_value = "20"
    )]
    pub auth_failure_limit: NonZeroU32,

    /// The window of AUTH_FAILURE_LIMIT, in seconds.
    #[arg(long, env = "AUTH_FAILURE_WINDOW_SEC", value_name = "AUTH_FAILURE_WINDOW_SEC", default_value = "60", value_parser = parse_seconds)]
    pub auth_failure_window: Duration,

    /// Whether BROKER_API_TOKEN is accepted on the track routes. Set false once every lab
    /// uses a scoped lab token (POST /v1/admin/tokens); BROKER_API_TOKEN may then be unset.
    #[arg(long, env = "ALLOW_STATIC_TRACK_TOKEN", value_name = "ALLOW_STATIC_TRACK_TOKEN", default_value = "true", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_static_track_token: bool,

    /// Live lab tokens at most: each is a `token` label on the metrics.
    #[arg(long, env = "MAX_TOKENS", value_name = "MAX_TOKENS", default_value = "100", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_tokens: u32,
}

impl AuthConfig {
    /// What `serve` requires: both role lists, each well formed, no token in both, and a
    /// well-formed metrics list when one is set.
    pub fn validate_for_serve(&self) -> Result<(), ConfigError> {
        // Without the static token, lab tokens minted by an admin are the only track tokens.
        let lab = self.api_token.as_ref();
        if lab.is_none() && self.allow_static_track_token {
            return Err(ConfigError::Missing("BROKER_API_TOKEN"));
        }
        let admin = self
            .admin_token
            .as_ref()
            .ok_or(ConfigError::Missing("BROKER_ADMIN_TOKEN"))?;
        let metrics = self.metrics_token.as_ref();
        let lists = [
            ("BROKER_API_TOKEN", lab),
            ("BROKER_ADMIN_TOKEN", Some(admin)),
        ];
        for (variable, list) in lists.into_iter().chain([("METRICS_TOKEN", metrics)]) {
            if let Some(list) = list {
                list.check_for_serve()
                    .map_err(|reason| ConfigError::Invalid { variable, reason })?;
            }
        }
        if lab.is_some_and(|lab| lab.tokens().any(|t| admin.tokens().any(|a| a == t))) {
            return Err(ConfigError::Invalid {
                variable: "BROKER_ADMIN_TOKEN",
                reason: "must not contain a token that is also in BROKER_API_TOKEN".into(),
            });
        }
        Ok(())
    }
}

/// Shortest token `serve` accepts: a guessable token is no token.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Token values that were published (this project's `.env.example`, the Python service's
/// defaults) and so protect nothing.
const KNOWN_PLACEHOLDERS: [&str; 4] = [
    "change-me-track-token",
    "change-me-admin-token",
    "dev_token_change_me",
    "admin_token_change_me",
];

/// One or more bearer tokens; the `Debug` form never shows them.
///
/// Parsing never fails: clap would quote the rejected value (the whole token list) in its
/// error, and that error reaches the logs. A malformed list is kept with its problem, and
/// [`AuthConfig::validate_for_serve`] refuses it naming only the variable and the rule.
#[derive(Debug, Clone)]
pub struct TokenList {
    tokens: Vec<SecretString>,
    problem: Option<&'static str>,
}

impl TokenList {
    /// Reads a comma-separated list; blanks around commas are ignored.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let tokens: Vec<SecretString> = raw
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(SecretString::from)
            .collect();
        let problem = if tokens.is_empty() {
            Some("must hold at least one token")
        } else if tokens.iter().any(|t| {
            t.expose_secret()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        }) {
            Some("tokens must not contain spaces or control characters")
        } else {
            None
        };
        Ok(Self { tokens, problem })
    }

    /// The tokens, exposed for comparison only.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().map(|t| t.expose_secret())
    }

    /// What `serve` requires of a token list, as a rule that never quotes a token: well
    /// formed, every token at least [`MIN_TOKEN_CHARS`] characters and not a published
    /// placeholder.
    pub fn check_for_serve(&self) -> Result<(), String> {
        if let Some(problem) = self.problem {
            return Err(problem.to_owned());
        }
        if self.tokens().any(|t| t.chars().count() < MIN_TOKEN_CHARS) {
            return Err(format!(
                "every token must be at least {MIN_TOKEN_CHARS} characters"
            ));
        }
        if self.tokens().any(|t| KNOWN_PLACEHOLDERS.contains(&t)) {
            return Err("a token is a published placeholder (from .env.example or the Python service's defaults); set a secret of your own".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lists_split_on_commas_and_refuse_blanks() {
        let list = TokenList::parse(" hunter2 , b,,").unwrap();
        assert_eq!(list.tokens().collect::<Vec<_>>(), ["hunter2", "b"]);
        for (raw, rule) in [
            (" , ", "at least one"),
            ("a b", "spaces"),
            ("short", "16 characters"),
            ("a-long-enough-token-1,short", "16 characters"),
            ("change-me-track-token", "placeholder"),
            ("dev_token_change_me", "placeholder"),
        ] {
            let refused = TokenList::parse(raw)
                .unwrap()
                .check_for_serve()
                .unwrap_err();
            assert!(refused.contains(rule), "{raw:?}: {refused}");
            assert!(
                !refused.contains(raw.trim()) || raw.trim().is_empty(),
                "the rule quotes the value: {refused}"
            );
        }
        assert!(
            TokenList::parse("a-long-enough-token-1,another-long-token-2")
                .unwrap()
                .check_for_serve()
                .is_ok()
        );
        assert!(
            !format!("{list:?}").contains("hunter2"),
            "Debug leaks a token"
        );
    }
}
