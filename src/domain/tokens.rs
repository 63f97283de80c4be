//! Scoped lab tokens: minted by an admin for some labs and name prefixes, with caps, and
//! presented as an ordinary bearer token on the track routes (docs/api.md, *Lab tokens*).
//!
//! Rule: a token's secret is random (256 bits) behind a recognisable prefix, shown once and
//! kept only as its SHA-256. A token is live until it is revoked or expires, and it allocates
//! only inside its scope: one of its labs, and a name prefix starting with one of its
//! prefixes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::time::EpochSecs;
use super::{LabName, NamePrefix, ValidationError};

/// What every lab token starts with, so secret scanners can find a leaked one.
pub const SECRET_PREFIX: &str = "sbx_lab_";
/// What every token id starts with.
pub const ID_PREFIX: &str = "tok_";
/// The largest `max_active` a token may have: its held allocations are kept on one record.
pub const MAX_ACTIVE_LIMIT: u32 = 1000;
/// The largest `per_minute` a token may have.
pub const PER_MINUTE_LIMIT: u32 = 100_000;
/// The longest token name: it is a metric label and a dashboard row.
pub const NAME_LIMIT: usize = 64;

/// A minted token, as the store keeps it: never its secret, only the secret's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabToken {
    /// Its id (`tok_…`): names it in `DELETE /v1/admin/tokens/{id}` and on the rows it holds.
    pub id: String,
    /// What the admin called it (unique among live tokens; the metrics' `token` label).
    pub name: String,
    /// The labs (`X-Instruqt-Track-ID`) it may allocate for; empty: any.
    #[serde(rename = "track_names")]
    pub labs: Vec<String>,
    /// The name prefixes it may allocate from; empty: any.
    pub name_prefixes: Vec<String>,
    /// Sandboxes held under it at once, at most.
    pub max_active: Option<u32>,
    /// Allocations per minute, at most.
    pub per_minute: Option<u32>,
    /// When it stops working.
    pub expires_at: Option<EpochSecs>,
    /// When it was minted.
    pub created_at: EpochSecs,
    /// When it was revoked.
    pub revoked_at: Option<EpochSecs>,
    /// When it was last presented, to the minute.
    #[serde(default)]
    pub last_used_at: Option<EpochSecs>,
    /// SHA-256 of the secret, lowercase hex.
    pub secret_sha256: String,
}

/// A token's settings, validated: what `POST /v1/admin/tokens` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// See [`LabToken::name`].
    pub name: String,
    /// See [`LabToken::labs`].
    pub labs: Vec<LabName>,
    /// See [`LabToken::name_prefixes`].
    pub name_prefixes: Vec<NamePrefix>,
    /// See [`LabToken::max_active`].
    pub max_active: Option<u32>,
    /// See [`LabToken::per_minute`].
    pub per_minute: Option<u32>,
    /// See [`LabToken::expires_at`].
    pub expires_at: Option<EpochSecs>,
}

/// The settings as sent, before validation.
#[derive(Debug, Clone, Default)]
pub struct RawTokenSpec {
    /// `name`.
    pub name: Option<String>,
    /// `track_names`.
    pub track_names: Option<Vec<String>>,
    /// `name_prefixes`.
    pub name_prefixes: Option<Vec<String>>,
    /// `max_active`.
    pub max_active: Option<i64>,
    /// `per_minute`.
    pub per_minute: Option<i64>,
    /// `expires_at`.
    pub expires_at: Option<i64>,
}

fn bounded(
    field: &'static str,
    value: Option<i64>,
    max: u32,
) -> Result<Option<u32>, ValidationError> {
    value
        .map(|value| {
            u32::try_from(value)
                .ok()
                .filter(|value| (1..=max).contains(value))
                .ok_or_else(|| ValidationError::new(field, format!("must be between 1 and {max}")))
        })
        .transpose()
}

impl TokenSpec {
    /// Validates `raw` at `now`; every error names its field.
    pub fn parse(raw: RawTokenSpec, now: EpochSecs) -> Result<Self, ValidationError> {
        let name = raw
            .name
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .ok_or_else(|| ValidationError::new("name", "is required"))?;
        if name.len() > NAME_LIMIT || !name.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return Err(ValidationError::new(
                "name",
                format!("must be at most {NAME_LIMIT} printable ASCII characters"),
            ));
        }
        let labs = raw
            .track_names
            .unwrap_or_default()
            .iter()
            .map(|lab| LabName::parse("track_names", lab))
            .collect::<Result<Vec<_>, _>>()?;
        let name_prefixes = raw
            .name_prefixes
            .unwrap_or_default()
            .iter()
            .map(|prefix| NamePrefix::parse("name_prefixes", prefix))
            .collect::<Result<Vec<_>, _>>()?;
        if labs.is_empty() && name_prefixes.is_empty() {
            return Err(ValidationError::new(
                "track_names",
                "or name_prefixes is required: a lab token is scoped to labs, name prefixes or both",
            ));
        }
        let expires_at = raw.expires_at.map(EpochSecs::new);
        if expires_at.is_some_and(|at| at <= now) {
            return Err(ValidationError::new("expires_at", "must be in the future"));
        }
        Ok(Self {
            name,
            labs,
            name_prefixes,
            max_active: bounded("max_active", raw.max_active, MAX_ACTIVE_LIMIT)?,
            per_minute: bounded("per_minute", raw.per_minute, PER_MINUTE_LIMIT)?,
            expires_at,
        })
    }
}

/// The digest a token's secret is kept and looked up by.
pub fn secret_digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether `bearer` looks like a lab token's secret (and so is looked up among them).
pub fn is_lab_token_secret(bearer: &str) -> bool {
    bearer.starts_with(SECRET_PREFIX)
}

/// Why a new token is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    /// `MAX_TOKENS` live tokens exist already.
    #[error("{limit} live lab tokens exist already (MAX_TOKENS); revoke one first")]
    TooMany {
        /// `MAX_TOKENS`.
        limit: usize,
    },
    /// A live token has this name (it is the metrics' label, so names are unique).
    #[error("a live lab token already has this name")]
    NameTaken,
}

/// Whether `token` may join `existing` at `now` under a limit of `limit` live tokens.
pub fn may_add(
    token: &LabToken,
    existing: &[LabToken],
    limit: usize,
    now: EpochSecs,
) -> Result<(), TokenRefused> {
    let live: Vec<&LabToken> = existing.iter().filter(|t| t.is_live(now)).collect();
    if live.iter().any(|t| t.name == token.name) {
        return Err(TokenRefused::NameTaken);
    }
    if live.len() >= limit {
        return Err(TokenRefused::TooMany { limit });
    }
    Ok(())
}

/// Whether a token holding `held` sandboxes may take one more under a cap of `max_active`.
pub fn under_cap(held: u64, max_active: Option<u32>) -> bool {
    max_active.is_none_or(|max| held < u64::from(max))
}

/// A token and how many sandboxes are held under it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUse {
    /// The token.
    pub token: LabToken,
    /// Sandboxes allocated under it and not yet released.
    pub held: u64,
}

/// Why a token may not allocate what a request asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this token allocates only {scope}")]
pub struct OutOfScope {
    /// The token's scope, in words.
    pub scope: String,
}

impl LabToken {
    /// A new token for `spec` at `now`, from 32 random bytes for the secret and 8 for the
    /// id: the record to keep, and the secret to show once.
    pub fn mint(spec: TokenSpec, now: EpochSecs, secret: [u8; 32], id: [u8; 8]) -> (Self, String) {
        use base64::Engine as _;
        let secret = format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let id: String = id.iter().map(|byte| format!("{byte:02x}")).collect();
        let token = Self {
            id: format!("{ID_PREFIX}{id}"),
            name: spec.name,
            labs: spec
                .labs
                .iter()
                .map(|lab| lab.as_str().to_owned())
                .collect(),
            name_prefixes: spec
                .name_prefixes
                .iter()
                .map(|prefix| prefix.as_str().to_owned())
                .collect(),
            max_active: spec.max_active,
            per_minute: spec.per_minute,
            expires_at: spec.expires_at,
            created_at: now,
            revoked_at: None,
            last_used_at: None,
            secret_sha256: secret_digest(&secret),
        };
        (token, secret)
    }

    /// Whether it works at `now`: not revoked, not expired.
    pub fn is_live(&self, now: EpochSecs) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }

    /// The scope in words, for the 403 that names it.
    pub fn scope(&self) -> String {
        let labs = match self.labs.as_slice() {
            [] => "any lab".to_owned(),
            labs => format!("lab {}", labs.join(" or ")),
        };
        let prefixes = match self.name_prefixes.as_slice() {
            [] => "any name".to_owned(),
            prefixes => format!("names starting with {}", prefixes.join(" or ")),
        };
        format!("{labs}, {prefixes}")
    }

    /// The name prefixes an allocation for `lab` asking for `prefix` may draw from, in the
    /// order to try them: the one asked for, when it is inside the scope; without one, the
    /// token's own prefixes (or no restriction when it has none).
    pub fn admits(
        &self,
        lab: Option<&LabName>,
        prefix: Option<&NamePrefix>,
    ) -> Result<Vec<Option<NamePrefix>>, OutOfScope> {
        let out = || OutOfScope {
            scope: self.scope(),
        };
        if !self.labs.is_empty()
            && !lab.is_some_and(|lab| self.labs.iter().any(|l| l == lab.as_str()))
        {
            return Err(out());
        }
        match prefix {
            Some(prefix) => {
                let inside = self.name_prefixes.is_empty()
                    || self
                        .name_prefixes
                        .iter()
                        .any(|own| prefix.as_str().starts_with(own.as_str()));
                if inside {
                    Ok(vec![Some(prefix.clone())])
                } else {
                    Err(out())
                }
            }
            None if self.name_prefixes.is_empty() => Ok(vec![None]),
            None => self
                .name_prefixes
                .iter()
                .map(|own| {
                    NamePrefix::parse("name_prefixes", own)
                        .map(Some)
                        .map_err(|_| out())
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(labs: &[&str], prefixes: &[&str]) -> RawTokenSpec {
        RawTokenSpec {
            name: Some("class-a".into()),
            track_names: Some(labs.iter().map(|s| (*s).to_owned()).collect()),
            name_prefixes: Some(prefixes.iter().map(|s| (*s).to_owned()).collect()),
            max_active: Some(30),
            ..RawTokenSpec::default()
        }
    }

    fn minted(labs: &[&str], prefixes: &[&str]) -> (LabToken, String) {
        let spec = TokenSpec::parse(spec(labs, prefixes), EpochSecs::new(100)).unwrap();
        LabToken::mint(spec, EpochSecs::new(100), [7; 32], [1; 8])
    }

    #[test]
    fn a_secret_is_recognisable_long_and_kept_only_as_its_digest() {
        let (token, secret) = minted(&["lab-a"], &[]);
        assert!(secret.starts_with(SECRET_PREFIX) && is_lab_token_secret(&secret));
        assert_eq!(
            secret.len(),
            SECRET_PREFIX.len() + 43,
            "256 bits, base64url"
        );
        assert_eq!(token.secret_sha256, secret_digest(&secret));
        assert!(!serde_json::to_string(&token).unwrap().contains(&secret));
        assert_eq!(token.id, "tok_0101010101010101");
    }

    #[test]
    fn the_scope_admits_its_labs_and_prefixes_only() {
        let lab = |name| LabName::parse("lab", name).unwrap();
        let prefix = |name| NamePrefix::parse("prefix", name).unwrap();
        let (token, _) = minted(&["lab-a"], &["nios-", "lab-"]);
        assert_eq!(
            token.admits(Some(&lab("lab-a")), Some(&prefix("nios-eu-"))),
            Ok(vec![Some(prefix("nios-eu-"))])
        );
        assert_eq!(
            token.admits(Some(&lab("lab-a")), None),
            Ok(vec![Some(prefix("nios-")), Some(prefix("lab-"))]),
            "without a prefix, any of its own"
        );
        let refused = token.admits(Some(&lab("lab-b")), None).unwrap_err();
        assert_eq!(
            refused.scope,
            "lab lab-a, names starting with nios- or lab-"
        );
        assert!(
            token.admits(None, None).is_err(),
            "a lab-scoped token needs the lab"
        );
        assert!(
            token
                .admits(Some(&lab("lab-a")), Some(&prefix("aws-")))
                .is_err()
        );
        let (any_lab, _) = minted(&[], &["aws-"]);
        assert_eq!(any_lab.admits(None, None), Ok(vec![Some(prefix("aws-"))]));
        let (any_name, _) = minted(&["lab-a"], &[]);
        assert_eq!(any_name.admits(Some(&lab("lab-a")), None), Ok(vec![None]));
    }

    #[test]
    fn bad_settings_are_refused_naming_the_field() {
        let now = EpochSecs::new(100);
        let field = |raw: RawTokenSpec| TokenSpec::parse(raw, now).unwrap_err().field;
        assert_eq!(field(spec(&[], &[])), "track_names");
        assert_eq!(
            field(RawTokenSpec {
                name: None,
                ..spec(&["a"], &[])
            }),
            "name"
        );
        assert_eq!(field(spec(&["caf\u{e9}"], &[])), "track_names");
        assert_eq!(
            field(RawTokenSpec {
                max_active: Some(0),
                ..spec(&["a"], &[])
            }),
            "max_active"
        );
        assert_eq!(
            field(RawTokenSpec {
                per_minute: Some(-1),
                ..spec(&["a"], &[])
            }),
            "per_minute"
        );
        assert_eq!(
            field(RawTokenSpec {
                expires_at: Some(100),
                ..spec(&["a"], &[])
            }),
            "expires_at"
        );
    }

    #[test]
    fn a_token_is_live_until_revoked_or_expired() {
        let (mut token, _) = minted(&["a"], &[]);
        token.expires_at = Some(EpochSecs::new(200));
        assert!(token.is_live(EpochSecs::new(199)));
        assert!(!token.is_live(EpochSecs::new(200)));
        token.expires_at = None;
        token.revoked_at = Some(EpochSecs::new(150));
        assert!(!token.is_live(EpochSecs::new(151)));
    }
}
