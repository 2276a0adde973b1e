//! What the Kinesis and Firehose clients share: the AWS configuration of a
//! destination (region, profile, assumed role, proxy, timeouts) and the one
//! reading of an SDK error into a [`KinesisError`].
//!
//! `kinesis` (`SdkKinesis`) and `firehose` (`SdkFirehose`) each build their
//! service's client from a [`Connection`] made by [`connect`].

use std::time::Duration;

use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

use super::destination::{AssumeRole, Destination};
use super::kinesis::{ClientOptions, ErrorCode, KinesisError};

/// What a service client is built from.
pub(super) struct Connection {
    /// Region, credentials chain and HTTP client, without any endpoint
    /// override (STS must not be sent to the service's endpoint).
    pub(super) shared: aws_config::SdkConfig,
    /// The assumed role's credentials, when the destination names a role.
    pub(super) credentials: Option<aws_config::sts::AssumeRoleProvider>,
    /// The connect and request time limits.
    pub(super) timeouts: TimeoutConfig,
}

/// The AWS configuration of `destination`, with the timeout and proxy of
/// `options`; `service` names the service in the log.
pub(super) async fn connect(
    destination: &Destination,
    options: &ClientOptions,
    service: &str,
) -> Connection {
    let timeout = options.request_timeout.unwrap_or(Duration::from_secs(30));
    let connect_timeout = Duration::from_secs(5).min(timeout);
    let https = destination
        .endpoint
        .as_deref()
        .is_none_or(|e| !e.starts_with("http://"));
    let env = |name: &str| std::env::var(name).ok();
    let proxy = match super::proxy::resolve(&options.proxy, options.no_proxy.as_deref(), https, env)
    {
        Ok(Some(proxy)) => {
            tracing::info!(proxy = %proxy.shown, from = proxy.source, service,
                "Requests go through a proxy");
            Some(proxy)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, service,
                "The proxy setting cannot be used; connecting directly");
            None
        }
    };
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http_client(proxy, connect_timeout));
    if let Some(profile) = &destination.profile {
        // The profile's own credentials, even when the environment has some.
        let credentials = aws_config::profile::ProfileFileCredentialsProvider::builder()
            .profile_name(profile)
            .build();
        loader = loader
            .profile_name(profile)
            .credentials_provider(credentials);
    }
    if let Some(region) = &destination.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let shared = loader.load().await;
    let credentials = match &destination.role {
        Some(role) => Some(assume_role(role, &shared).await),
        None => None,
    };
    Connection {
        shared,
        credentials,
        timeouts: TimeoutConfig::builder()
            .connect_timeout(connect_timeout)
            .operation_timeout(timeout)
            .build(),
    }
}

/// Credentials of `role`, assumed with the credentials of `shared` through STS
/// (at `sts_endpoint` if set), cached and refreshed by the SDK.
async fn assume_role(
    role: &AssumeRole,
    shared: &aws_config::SdkConfig,
) -> aws_config::sts::AssumeRoleProvider {
    let mut sts = shared.clone();
    if let Some(endpoint) = &role.sts_endpoint {
        sts = sts.into_builder().endpoint_url(endpoint).build();
    }
    let mut provider = aws_config::sts::AssumeRoleProvider::builder(&role.role_arn)
        .session_name(&role.session_name)
        .configure(&sts);
    if let Some(id) = &role.external_id {
        provider = provider.external_id(id);
    }
    provider.build().await
}

/// The SDK's own HTTPS client (rustls with aws-lc, as its default), with the
/// proxy resolved above or none: the SDK's default would read the proxy
/// variables itself, without `kinesis.proxy`, its `"none"`, or the metadata
/// service's exemption.
fn http_client(
    proxy: Option<super::proxy::Proxy>,
    connect_timeout: Duration,
) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::{proxy::ProxyConfig, tls};
    use aws_smithy_runtime_api::client::http::{
        http_client_fn, HttpConnectorSettings, SharedHttpConnector,
    };
    let connector = aws_smithy_http_client::Connector::builder()
        .connector_settings(
            HttpConnectorSettings::builder()
                .connect_timeout(connect_timeout)
                .build(),
        )
        .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
        .proxy_config(proxy.map_or_else(ProxyConfig::disabled, |p| p.config))
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build();
    let connector = SharedHttpConnector::new(connector);
    // One connector (one connection pool) for every request.
    http_client_fn(move |_, _| connector.clone())
}

pub(super) fn sdk_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> KinesisError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (code, message) = match &err {
        SdkError::ServiceError(e) => (
            ErrorCode::kinesis(e.err().code().unwrap_or("Unknown")),
            e.err().message().unwrap_or_default().to_owned(),
        ),
        SdkError::TimeoutError(_) => (ErrorCode::Timeout, "request timed out".to_owned()),
        SdkError::DispatchFailure(d) => {
            // An error the connector classified (a connection closed under the
            // request is a transient "other" error, not an I/O one) is the
            // transport's; an unclassified one arose before the request was sent
            // (resolving credentials, signing).
            let code = if d.is_timeout() {
                ErrorCode::Timeout
            } else if d.is_io() || d.as_other().is_some() {
                ErrorCode::Transport
            } else {
                ErrorCode::Credentials
            };
            (code, error_chain(&err))
        }
        _ => (ErrorCode::Transport, error_chain(&err)),
    };
    KinesisError {
        operation,
        code,
        // The SDK's messages may quote the endpoint or the proxy, credentials
        // and all; this message goes to the log and to `shardline status`.
        message: super::redact::text(&message).into_owned(),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
