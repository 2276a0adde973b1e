//! What the Kinesis and Firehose clients share: the AWS configuration of a
//! destination (region, profile, assumed role, proxy, timeouts).
//!
//! `kinesis` (`SdkKinesis`) and `firehose` (`SdkFirehose`) each build their
//! service's client from a [`Connection`] made by [`connect`].

use std::time::Duration;

use aws_sdk_kinesis::config::timeout::TimeoutConfig;

use super::destination::{AssumeRole, Destination};

/// Connection settings of the Kinesis and Firehose clients.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// The default destination (`[kinesis]`).
    pub destination: Destination,
    /// Streams with a destination of their own (`[[destination]]`).
    pub streams: Vec<(String, Destination)>,
    /// Kinesis streams named by ARN: (name inside the agent, ARN). Their
    /// requests carry `StreamARN` instead of `StreamName`.
    pub stream_arns: Vec<(String, String)>,
    /// Time limit of one request.
    pub request_timeout: Option<Duration>,
    /// The proxy (`kinesis.proxy`, else the environment).
    pub proxy: super::proxy::ProxySetting,
    pub no_proxy: Option<String>,
}

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
            tracing::info!(proxy = %proxy.shown, from = proxy.source,
                "{service} requests go through a proxy");
            Some(proxy)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e,
                "The proxy setting cannot be used; connecting to {service} directly");
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
