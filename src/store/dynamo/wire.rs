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

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_dynamodb::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sdk_dynamodb::config::http::{HttpRequest, HttpResponse};
use aws_sdk_dynamodb::error::SdkError;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use futures::FutureExt;

pub(super) use self::json::Operation;

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
    host: String,
    region: String,
    credentials: SharedCredentialsProvider,
    /// The credentials in use and when to ask for new ones.
    identity: Mutex<Option<(Identity, Option<SystemTime>)>>,
    /// One refresh at a time; callers that find it taken wait for its result.
    refreshing: tokio::sync::Mutex<()>,
    user_agent: http::HeaderValue,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Wire {
    /// A client with the region and credentials of `config`, calling `endpoint_url` if set
    /// (DynamoDB Local), else the region's endpoint as the SDK's rules give it.
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
            .use_fips(false)
            .use_dual_stack(false)
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
        let settings = HttpConnectorSettings::builder()
            .connect_timeout(connect_timeout)
            .build();
        let connector = aws_smithy_http_client::default_connector(
            &settings,
            aws_smithy_async::rt::sleep::default_async_sleep(),
        )
        .ok_or(WireError::NoConnector)?;
        Ok(Self {
            connector,
            endpoint: format!("{endpoint}/"),
            host,
            region,
            credentials,
            identity: Mutex::new(None),
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
        let identity = self
            .identity()
            .await
            .map_err(|err| SdkError::dispatch_failure(ConnectorError::other(err, None)))?;
        let request = self
            .signed(O::TARGET, body, &identity)
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
        identity: &Identity,
    ) -> Result<HttpRequest, WireError> {
        let failed =
            |what: &str, err: &dyn std::fmt::Display| WireError::Endpoint(format!("{what}: {err}"));
        let mut request = http::Request::post(self.endpoint.as_str())
            .header(http::header::HOST, self.host.as_str())
            .header(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-amz-json-1.0"),
            )
            .header("x-amz-target", http::HeaderValue::from_static(target))
            .header(http::header::USER_AGENT, self.user_agent.clone())
            .body(())
            .map_err(|err| failed("building the request", &err))?;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(identity)
            .region(&self.region)
            .name("dynamodb")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|err| failed("signing", &err))?
            .into();
        let headers = request
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers,
            SignableBody::Bytes(&body),
        )
        .map_err(|err| failed("signing", &err))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|err| failed("signing", &err))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        HttpRequest::try_from(request.map(|()| SdkBody::from(body)))
            .map_err(|err| failed("building the request", &err))
    }

    /// The credentials to sign with, asked for again shortly before they expire.
    async fn identity(&self) -> Result<Identity, Box<dyn std::error::Error + Send + Sync>> {
        if let Some(identity) = self.current_identity() {
            return Ok(identity);
        }
        let _refreshing = self.refreshing.lock().await;
        // Someone else's refresh may have finished while this call waited for its turn.
        if let Some(identity) = self.current_identity() {
            return Ok(identity);
        }
        let credentials = self.credentials.provide_credentials().await?;
        let expiry = credentials.expiry();
        let identity = Identity::new(credentials, expiry);
        *self.identity.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((identity.clone(), expiry));
        Ok(identity)
    }

    fn current_identity(&self) -> Option<Identity> {
        let cached = self.identity.lock().unwrap_or_else(PoisonError::into_inner);
        let (identity, expiry) = cached.as_ref()?;
        let fresh = expiry.is_none_or(|expiry| SystemTime::now() + REFRESH_BEFORE_EXPIRY < expiry);
        fresh.then(|| identity.clone())
    }
}
