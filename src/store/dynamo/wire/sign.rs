//! SigV4 for the one request shape [`Wire`](super::Wire) sends: `POST /` with a JSON body
//! and five headers at most.
//!
//! Why not `aws_sigv4::http_request::sign` for every call: it derives the signing key again
//! each time (four HMAC-SHA256 for a key that changes once a day per credentials) and
//! canonicalises arbitrary requests, which under callgrind was 40 % of a DynamoDB
//! allocation's instructions. Here the key is derived once a day with `aws-sigv4`'s own
//! `generate_signing_key`, the signature is `aws-sigv4`'s `calculate_signature`, and only
//! the canonical request of this fixed shape is written by hand. A test pins every header
//! to what `aws_sigv4::http_request::sign` produces for the same request and instant.

use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use sha2::{Digest, Sha256};

use crate::domain::time::EpochSecs;

/// The service name DynamoDB signs for.
const SERVICE: &str = "dynamodb";

/// The content type of every request.
pub(super) const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// The headers a signed request carries, besides `content-type`, `host` and `x-amz-target`.
#[derive(Debug)]
pub(super) struct Signature {
    /// `x-amz-date`.
    pub(super) amz_date: String,
    /// `authorization`.
    pub(super) authorization: String,
}

/// Signs requests for one host and region, keeping the day's signing key.
#[derive(Debug)]
pub(super) struct Signer {
    host: String,
    region: String,
    key: Mutex<Option<DayKey>>,
}

/// A signing key and what it was derived for.
#[derive(Debug)]
struct DayKey {
    /// `YYYYMMDD`.
    date: String,
    access_key_id: String,
    secret: String,
    key: Vec<u8>,
}

impl Signer {
    /// A signer for requests to `host` (`host[:port]`, as the `host` header says) in
    /// `region`.
    pub(super) fn new(host: String, region: String) -> Self {
        Self {
            host,
            region,
            key: Mutex::new(None),
        }
    }

    /// The `x-amz-date` and `authorization` of a request for `target` with `body`, made
    /// `at`, with `credentials`; a session token goes in `x-amz-security-token`.
    pub(super) fn sign(
        &self,
        credentials: &Credentials,
        target: &str,
        body: &[u8],
        at: SystemTime,
    ) -> Signature {
        let amz_date = amz_date(at);
        let date = &amz_date[..8];
        let token = credentials.session_token();
        let signed_headers = if token.is_some() {
            "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
        } else {
            "content-type;host;x-amz-date;x-amz-target"
        };
        let mut canonical = String::with_capacity(512);
        canonical.push_str("POST\n/\n\ncontent-type:");
        canonical.push_str(CONTENT_TYPE);
        canonical.push_str("\nhost:");
        canonical.push_str(&self.host);
        canonical.push_str("\nx-amz-date:");
        canonical.push_str(&amz_date);
        if let Some(token) = token {
            canonical.push_str("\nx-amz-security-token:");
            canonical.push_str(token);
        }
        canonical.push_str("\nx-amz-target:");
        canonical.push_str(target);
        canonical.push_str("\n\n");
        canonical.push_str(signed_headers);
        canonical.push('\n');
        canonical.push_str(&hex(&Sha256::digest(body)));
        let scope = format!("{date}/{}/{SERVICE}/aws4_request", self.region);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let signature = self.with_key(credentials, date, at, |key| {
            calculate_signature(key, string_to_sign.as_bytes())
        });
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key_id()
        );
        Signature {
            amz_date,
            authorization,
        }
    }

    /// Runs `sign` with the signing key of `credentials` on `date`, derived when the day or
    /// the credentials changed.
    fn with_key<T>(
        &self,
        credentials: &Credentials,
        date: &str,
        at: SystemTime,
        sign: impl FnOnce(&[u8]) -> T,
    ) -> T {
        let mut cached = self.key.lock().unwrap_or_else(PoisonError::into_inner);
        let current = cached.as_ref().is_some_and(|key| {
            key.date == date
                && key.access_key_id == credentials.access_key_id()
                && key.secret == credentials.secret_access_key()
        });
        if !current {
            let key =
                generate_signing_key(credentials.secret_access_key(), at, &self.region, SERVICE);
            *cached = Some(DayKey {
                date: date.to_owned(),
                access_key_id: credentials.access_key_id().to_owned(),
                secret: credentials.secret_access_key().to_owned(),
                key: key.as_ref().to_vec(),
            });
        }
        match cached.as_ref() {
            Some(key) => sign(&key.key),
            None => unreachable!("the key was stored just above"),
        }
    }
}

/// `at` as SigV4 writes it: `YYYYMMDDTHHMMSSZ`, UTC.
fn amz_date(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    EpochSecs::new(i64::try_from(secs).unwrap_or(i64::MAX))
        .rfc3339()
        .replace(['-', ':'], "")
}

/// Lower-case hex, as SigV4 writes hashes.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_smithy_runtime_api::client::identity::Identity;

    use super::*;

    /// What `aws-sigv4` itself puts on the same request.
    fn reference(credentials: &Credentials, host: &str, body: &[u8], at: SystemTime) -> Signature {
        let identity: Identity = credentials.clone().into();
        let mut request = http::Request::post(format!("http://{host}/"))
            .header("content-type", CONTENT_TYPE)
            .header("host", host)
            .header("x-amz-target", "DynamoDB_20120810.UpdateItem")
            .header("user-agent", "sandbox-broker/test")
            .body(())
            .unwrap();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-1")
            .name("dynamodb")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let uri = format!("http://{host}/");
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        let signable = SignableRequest::new(
            "POST",
            &uri,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(&mut request);
        let header = |name: &str| request.headers()[name].to_str().unwrap().to_owned();
        if let Some(token) = credentials.session_token() {
            assert_eq!(header("x-amz-security-token"), token);
        }
        Signature {
            amz_date: header("x-amz-date"),
            authorization: header("authorization"),
        }
    }

    #[test]
    fn every_header_is_what_aws_sigv4_signs() {
        let body = br#"{"TableName":"SandboxPool","Key":{"PK":{"S":"SBX#1"}}}"#;
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_123);
        for credentials in [
            Credentials::new("AKIDEXAMPLE", "secret/key+1", None, None, "test"),
            Credentials::new("ASIAEXAMPLE", "other", Some("token==".into()), None, "test"),
        ] {
            for host in ["dynamodb.eu-west-1.amazonaws.com", "127.0.0.1:8000"] {
                let signer = Signer::new(host.to_owned(), "eu-west-1".to_owned());
                let ours = signer.sign(&credentials, "DynamoDB_20120810.UpdateItem", body, at);
                let theirs = reference(&credentials, host, body, at);
                assert_eq!(ours.amz_date, theirs.amz_date);
                assert_eq!(ours.authorization, theirs.authorization);
            }
        }
    }

    #[test]
    fn the_key_follows_the_day_and_the_credentials() {
        let body = b"{}";
        let signer = Signer::new("127.0.0.1:8000".to_owned(), "eu-west-1".to_owned());
        let first = Credentials::new("AKID1", "one", None, None, "test");
        let second = Credentials::new("AKID2", "two", None, None, "test");
        let day = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_123);
        let next_day = day + Duration::from_secs(86_400);
        for (credentials, at) in [(&first, day), (&first, next_day), (&second, next_day)] {
            let ours = signer.sign(credentials, "DynamoDB_20120810.UpdateItem", body, at);
            let theirs = reference(credentials, "127.0.0.1:8000", body, at);
            assert_eq!(ours.authorization, theirs.authorization);
        }
    }
}
