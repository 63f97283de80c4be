//! The store's lean path to DynamoDB for single-item calls and queries.
//!
//! Why: the SDK's orchestrator (interceptors, a config bag, an endpoint rules engine and an
//! identity cache consulted on every call) costs about four times the CPU of the call
//! itself: measured on this project's bench, about 110 µs per `UpdateItem` against 27 µs
//! for the same request signed and sent directly. An allocation makes two calls, so that
//! overhead was most of the service's CPU per allocation.
//!
//! What stays the SDK's: the HTTP connector (its TLS, pool and connect timeout, built by
//! `aws_smithy_http_client::default_connector`, as the SDK builds it), the credentials chain
//! (asked again shortly before the credentials expire), the endpoint rules (evaluated once,
//! at start) and SigV4 (`aws-sigv4`). What is done here: the JSON 1.0 protocol of the six
//! operations the store calls (`GetItem`, `PutItem`, `UpdateItem`, `DeleteItem`, `Query`,
//! `Scan`), with the SDK's own input, output and error types, so the protocol code, the
//! retry loop (`calls.rs`) and the error classifier (`error.rs`) see exactly what the SDK
//! would hand them. Transactions, batch writes, paginated admin reads and table management
//! stay on the SDK.

mod json;
mod sign;

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_dynamodb::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sdk_dynamodb::config::http::{HttpRequest, HttpResponse};
use aws_sdk_dynamodb::error::SdkError;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use futures::FutureExt;

pub(super) use self::json::Operation;
use self::sign::{CONTENT_TYPE, Signer};

/// Credentials are asked for again this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// Why the lean client could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// The SDK configuration has no region.
    #[error("no AWS region is configured (set AWS_REGION)")]
    NoRegion,
    /// The SDK configuration has no credentials provider.
    #[error("no AWS credentials provider is configured")]
    NoCredentials,
    /// The endpoint rules refused the configuration.
    #[error("DynamoDB endpoint: {0}")]
    Endpoint(String),
    /// The SDK's default HTTP connector is not available in this build.
    #[error("no default HTTPS connector in this build")]
    NoConnector,
}

/// Sends the store's single-item calls and queries: see the module docs.
pub(super) struct Wire {
    connector: SharedHttpConnector,
    /// Where calls go (`https://dynamodb.<region>.amazonaws.com` or `DDB_ENDPOINT_URL`).
    endpoint: String,
    /// The endpoint's `host[:port]`, signed as the `host` header.
    host: http::HeaderValue,
    signer: Signer,
    credentials: SharedCredentialsProvider,
    /// The credentials in use (they say when to ask for new ones).
    current: Mutex<Option<Credentials>>,
    /// One refresh at a time; callers that find it taken wait for its result.
    refreshing: tokio::sync::Mutex<()>,
    user_agent: http::HeaderValue,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Wire {
    /// A client with the region and credentials of `config`, calling `endpoint_url` if set
    /// (DynamoDB Local), else the endpoint the SDK's rules give for the region (and the
    /// FIPS and dual-stack choices) of `config`.
    pub(super) fn new(
        config: &aws_config::SdkConfig,
        endpoint_url: Option<&str>,
        connect_timeout: Duration,
    ) -> Result<Self, WireError> {
        let region = config.region().ok_or(WireError::NoRegion)?.to_string();
        let credentials = config
            .credentials_provider()
            .ok_or(WireError::NoCredentials)?;
        let params = Params::builder()
            .region(region.clone())
            .set_endpoint(endpoint_url.map(str::to_owned))
            // AWS_USE_FIPS_ENDPOINT and AWS_USE_DUALSTACK_ENDPOINT, as the SDK reads them.
            .use_fips(config.use_fips().unwrap_or(false))
            .use_dual_stack(config.use_dual_stack().unwrap_or(false))
            .build()
            .map_err(|err| WireError::Endpoint(err.to_string()))?;
        // The default rules are plain code: their future is ready at once.
        let endpoint = DefaultResolver::new()
            .resolve_endpoint(&params)
            .now_or_never()
            .ok_or_else(|| WireError::Endpoint("the endpoint rules did not answer".into()))?
            .map_err(|err| WireError::Endpoint(err.to_string()))?;
        let endpoint = endpoint.url().trim_end_matches('/').to_owned();
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|err: http::uri::InvalidUri| WireError::Endpoint(err.to_string()))?;
        let host = uri
            .authority()
            .map(ToString::to_string)
            .ok_or_else(|| WireError::Endpoint(format!("{endpoint} names no host")))?;
        // Requests are signed for the path `/` (DynamoDB's endpoints have no other).
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(WireError::Endpoint(format!(
                "{endpoint}: a DynamoDB endpoint is a scheme and a host, with no path"
            )));
        }
        let settings = HttpConnectorSettings::builder()
            .connect_timeout(connect_timeout)
            .build();
        let connector = aws_smithy_http_client::default_connector(
            &settings,
            aws_smithy_async::rt::sleep::default_async_sleep(),
        )
        .ok_or(WireError::NoConnector)?;
        let host_header = http::HeaderValue::from_str(&host)
            .map_err(|err| WireError::Endpoint(format!("{host}: {err}")))?;
        Ok(Self {
            connector,
            endpoint: format!("{endpoint}/"),
            host: host_header,
            signer: Signer::new(host, region),
            credentials,
            current: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            user_agent: http::HeaderValue::from_static(concat!(
                "sandbox-broker/",
                env!("CARGO_PKG_VERSION")
            )),
        })
    }

    /// Sends `input` once: the SDK's output, or the SDK error the SDK would have returned.
    pub(super) async fn send<O: Operation>(
        &self,
        input: &O,
    ) -> Result<O::Output, SdkError<O::Error, HttpResponse>> {
        let body = input.body().map_err(SdkError::construction_failure)?;
        // No credentials now (the container endpoint did not answer) is retried like a
        // call that got no answer.
        let credentials = self
            .credentials()
            .await
            .map_err(|err| SdkError::dispatch_failure(ConnectorError::other(err, None)))?;
        let request = self
            .signed(O::TARGET, body, &credentials)
            .map_err(SdkError::construction_failure)?;
        let response = self
            .connector
            .call(request)
            .await
            .map_err(SdkError::dispatch_failure)?;
        let status = response.status();
        let bytes = match ByteStream::new(response.into_body()).collect().await {
            Ok(bytes) => bytes.into_bytes(),
            Err(err) => {
                let raw = HttpResponse::new(status, SdkBody::empty());
                return Err(SdkError::response_error(err, raw));
            }
        };
        let raw = || HttpResponse::new(status, SdkBody::from(bytes.clone()));
        if status.is_success() {
            O::output(&bytes).map_err(|err| SdkError::response_error(err, raw()))
        } else {
            Err(SdkError::service_error(
                json::service_error::<O>(status.as_u16(), &bytes),
                raw(),
            ))
        }
    }

    /// The request for `target` with `body`, signed with SigV4.
    fn signed(
        &self,
        target: &'static str,
        body: Vec<u8>,
        credentials: &Credentials,
    ) -> Result<HttpRequest, WireError> {
        let signature = self
            .signer
            .sign(credentials, target, &body, SystemTime::now());
        let header = |value: String| {
            http::HeaderValue::try_from(value)
                .map_err(|err| WireError::Endpoint(format!("a signed header: {err}")))
        };
        let mut request = http::Request::post(self.endpoint.as_str())
            .header(http::header::HOST, self.host.clone())
            .header(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(CONTENT_TYPE),
            )
            .header("x-amz-target", http::HeaderValue::from_static(target))
            .header("x-amz-date", header(signature.amz_date)?)
            .header(
                http::header::AUTHORIZATION,
                header(signature.authorization)?,
            )
            .header(http::header::USER_AGENT, self.user_agent.clone());
        if let Some(token) = credentials.session_token() {
            request = request.header("x-amz-security-token", header(token.to_owned())?);
        }
        let request = request
            .body(SdkBody::from(body))
            .map_err(|err| WireError::Endpoint(format!("building the request: {err}")))?;
        HttpRequest::try_from(request)
            .map_err(|err| WireError::Endpoint(format!("building the request: {err}")))
    }

    /// The credentials to sign with, asked for again shortly before they expire.
    async fn credentials(&self) -> Result<Credentials, Box<dyn std::error::Error + Send + Sync>> {
        if let Some(credentials) = self.fresh_credentials() {
            return Ok(credentials);
        }
        let _refreshing = self.refreshing.lock().await;
        // Someone else's refresh may have finished while this call waited for its turn.
        if let Some(credentials) = self.fresh_credentials() {
            return Ok(credentials);
        }
        let credentials = self.credentials.provide_credentials().await?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(credentials.clone());
        Ok(credentials)
    }

    fn fresh_credentials(&self) -> Option<Credentials> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let credentials = current.as_ref()?;
        let fresh = credentials
            .expiry()
            .is_none_or(|expiry| SystemTime::now() + REFRESH_BEFORE_EXPIRY < expiry);
        fresh.then(|| credentials.clone())
    }
}

#[cfg(test)]
mod tests {
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_sdk_dynamodb::config::Region;

    use super::*;

    fn config(region: &str) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .region(Region::new(region.to_owned()))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "a", "b", None, None, "test",
            )))
            .build()
    }

    #[tokio::test]
    async fn the_endpoint_is_the_regions_or_the_one_given_and_has_no_path() {
        let timeout = Duration::from_millis(300);
        let regional = Wire::new(&config("eu-west-1"), None, timeout).unwrap();
        assert_eq!(
            regional.endpoint,
            "https://dynamodb.eu-west-1.amazonaws.com/"
        );
        assert_eq!(regional.host, "dynamodb.eu-west-1.amazonaws.com");
        let local =
            Wire::new(&config("us-east-1"), Some("http://127.0.0.1:8000"), timeout).unwrap();
        assert_eq!(local.endpoint, "http://127.0.0.1:8000/");
        assert_eq!(local.host, "127.0.0.1:8000");
        for with_path in ["http://127.0.0.1:8000/dynamo", "http://127.0.0.1:8000/?x=1"] {
            let refused = Wire::new(&config("us-east-1"), Some(with_path), timeout);
            assert!(
                matches!(refused, Err(WireError::Endpoint(_))),
                "{with_path}: {refused:?}"
            );
        }
        let no_region = aws_config::SdkConfig::builder().build();
        assert!(matches!(
            Wire::new(&no_region, None, timeout),
            Err(WireError::NoRegion)
        ));
    }
}
