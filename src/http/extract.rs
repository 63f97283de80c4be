//! Extractors that parse requests into validated domain types.
//!
//! Rule: a handler only ever receives parsed values; every rejection, ours or axum's,
//! becomes an [`ApiError`] and so the error envelope (docs/api.md, *Errors*).

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::domain::{
    HolderKey, IdempotencyKey, LabName, NamePrefix, SandboxId, ValidationError, trim_blanks,
};

// Header names as `HeaderName`s: a lookup by `&str` parses the name on every call.
/// Preferred student header.
pub const HOLDER_HEADER: HeaderName = HeaderName::from_static("x-instruqt-sandbox-id");
/// Legacy student header, used when the preferred one is absent or blank.
pub const LEGACY_HOLDER_HEADER: HeaderName = HeaderName::from_static("x-track-id");
/// Lab slug header.
pub const LAB_HEADER: HeaderName = HeaderName::from_static("x-instruqt-track-id");
/// Name prefix header.
pub const NAME_PREFIX_HEADER: HeaderName = HeaderName::from_static("x-sandbox-name-prefix");
/// Idempotency header.
pub const IDEMPOTENCY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// `Prefer: wait=N` (RFC 7240), a request to wait for a sandbox.
const PREFER_HEADER: HeaderName = HeaderName::from_static("prefer");

/// Checks a path id an admin route names (`tok_…`, `res_…`, `wh_…`): `prefix`, then at
/// most 64 ASCII letters, digits and `_` in all; `what` names the kind in the 400.
pub fn prefixed_id(id: &str, prefix: &str, what: &str) -> Result<(), ValidationError> {
    let well_formed = id.starts_with(prefix)
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if well_formed {
        Ok(())
    } else {
        Err(ValidationError::new(
            "id",
            format!("is not a {what} id ({prefix}…)"),
        ))
    }
}

/// A header's trimmed text, `None` when absent or blank. Non-ASCII bytes are a validation error.
pub fn header_text<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    display: &str,
) -> Result<Option<&'h str>, ValidationError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ValidationError::new(display, "must contain printable ASCII characters only")
    })?;
    let text = trim_blanks(text);
    Ok((!text.is_empty()).then_some(text))
}

/// The holder key from `X-Instruqt-Sandbox-ID`, else `X-Track-ID`.
pub fn holder_key(headers: &HeaderMap) -> Result<HolderKey, ApiError> {
    if let Some(text) = header_text(headers, &HOLDER_HEADER, "X-Instruqt-Sandbox-ID")? {
        return Ok(HolderKey::parse("X-Instruqt-Sandbox-ID", text)?);
    }
    match header_text(headers, &LEGACY_HOLDER_HEADER, "X-Track-ID")? {
        Some(text) => Ok(HolderKey::parse("X-Track-ID", text)?),
        None => Err(ApiError::MissingHolderKey),
    }
}

/// The caller's holder key; 400 `MISSING_SANDBOX_ID` when neither header is set.
#[derive(Debug, Clone)]
pub struct Holder(pub HolderKey);

impl<S: Send + Sync> FromRequestParts<S> for Holder {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        holder_key(&parts.headers).map(Self)
    }
}

/// The optional allocation headers: track name, name prefix and idempotency key.
/// A blank header counts as absent, so a lab script's unset variable does no harm.
#[derive(Debug, Clone)]
pub struct AllocationHeaders {
    /// `X-Instruqt-Track-ID`.
    pub lab: Option<LabName>,
    /// `X-Sandbox-Name-Prefix`.
    pub name_prefix: Option<NamePrefix>,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<IdempotencyKey>,
    /// `Prefer: wait=N`: how long to wait for a sandbox when none is available.
    pub wait: Option<std::time::Duration>,
}

impl<S: Send + Sync> FromRequestParts<S> for AllocationHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        Ok(Self {
            lab: optional_header(headers, &LAB_HEADER, "X-Instruqt-Track-ID", LabName::parse)?,
            name_prefix: optional_header(
                headers,
                &NAME_PREFIX_HEADER,
                "X-Sandbox-Name-Prefix",
                NamePrefix::parse,
            )?,
            idempotency_key: optional_header(
                headers,
                &IDEMPOTENCY_HEADER,
                "Idempotency-Key",
                IdempotencyKey::parse,
            )?,
            wait: headers
                .get_all(&PREFER_HEADER)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .find_map(crate::allocation::waiting::requested_wait),
        })
    }
}

/// An optional header parsed with `parse`; blank counts as absent.
fn optional_header<T>(
    headers: &HeaderMap,
    name: &HeaderName,
    display: &str,
    parse: fn(&str, &str) -> Result<T, ValidationError>,
) -> Result<Option<T>, ValidationError> {
    header_text(headers, name, display)?
        .map(|text| parse(display, text))
        .transpose()
}

/// The `{sandbox_id}` path segment, decoded and validated.
#[derive(Debug, Clone)]
pub struct SandboxIdPath(pub SandboxId);

impl<S: Send + Sync> FromRequestParts<S> for SandboxIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|rejection: PathRejection| {
                    ValidationError::new("sandbox_id", rejection.body_text())
                })?;
        Ok(Self(SandboxId::parse("sandbox_id", &raw)?))
    }
}

/// Query parameters deserialized into `T`; a malformed query is 400 `VALIDATION_ERROR`.
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection: QueryRejection| {
                ValidationError::new("query", rejection.body_text()).into()
            })
    }
}

/// A JSON body, read whatever the `Content-Type` (curl's `-d` sends a form type), within
/// the router's body limit; too large is 413, malformed is 400.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection: BytesRejection| {
                    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge("Request body is larger than 1 MiB".to_owned())
                    } else {
                        ValidationError::new("body", rejection.body_text()).into()
                    }
                })?;
        serde_json::from_slice(&bytes).map(Self).map_err(|err| {
            ValidationError::new("body", format!("is not valid JSON for this route: {err}")).into()
        })
    }
}
