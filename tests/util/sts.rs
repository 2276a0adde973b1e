//! A small STS on 127.0.0.1 that answers `AssumeRole` the way AWS does (the query
//! protocol: a form-encoded POST, an XML answer), records each call and who
//! signed it, and refuses with `AccessDenied` while told to. No emulator of STS
//! runs in this process; this speaks only the one action the agent uses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;

/// The access key id of the credentials the role gives.
pub const ASSUMED_KEY: &str = "ASIASHARDLINEASSUMED";

/// One `AssumeRole` call.
#[derive(Debug, Clone, PartialEq)]
pub struct AssumeRoleCall {
    pub role_arn: String,
    pub external_id: Option<String>,
    pub session_name: String,
    /// `AKID/region` of the request's signature.
    pub signer: Option<String>,
}

#[derive(Default)]
pub struct StsState {
    /// While false, `AssumeRole` is refused with `AccessDenied`.
    pub allow: AtomicBool,
    pub calls: Mutex<Vec<AssumeRoleCall>>,
}

pub struct Sts {
    pub endpoint: String,
    pub state: Arc<StsState>,
    task: tokio::task::JoinHandle<()>,
}

impl Sts {
    pub async fn start(allow: bool) -> Sts {
        let state = Arc::new(StsState::default());
        state.allow.store(allow, Ordering::Release);
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Sts {
            endpoint,
            state,
            task,
        }
    }

    pub fn calls(&self) -> Vec<AssumeRoleCall> {
        self.state.calls.lock().unwrap().clone()
    }
}

impl Drop for Sts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Decodes `application/x-www-form-urlencoded` text.
fn form(body: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn xml(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/xml")
        .body(Body::from(body))
        .unwrap()
}

async fn answer(State(state): State<Arc<StsState>>, req: Request) -> Response {
    let signer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(super::faults::signer);
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    let fields = form(std::str::from_utf8(&body).unwrap());
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if get("Action").as_deref() != Some("AssumeRole") {
        return xml(
            StatusCode::BAD_REQUEST,
            "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidAction</Code>\
             <Message>only AssumeRole</Message></Error><RequestId>0</RequestId></ErrorResponse>"
                .into(),
        );
    }
    let call = AssumeRoleCall {
        role_arn: get("RoleArn").unwrap_or_default(),
        external_id: get("ExternalId"),
        session_name: get("RoleSessionName").unwrap_or_default(),
        signer,
    };
    state.calls.lock().unwrap().push(call.clone());
    if !state.allow.load(Ordering::Acquire) {
        return xml(
            StatusCode::FORBIDDEN,
            format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>\
                 <Type>Sender</Type><Code>AccessDenied</Code><Message>User: \
                 arn:aws:iam::000000000000:user/test is not authorized to perform: \
                 sts:AssumeRole on resource: {}</Message></Error>\
                 <RequestId>denied</RequestId></ErrorResponse>",
                call.role_arn
            ),
        );
    }
    let expires = aws_smithy_types::DateTime::from(SystemTime::now() + Duration::from_secs(3600))
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap();
    let role_name = call.role_arn.rsplit('/').next().unwrap_or_default();
    xml(
        StatusCode::OK,
        format!(
            "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <AssumeRoleResult><Credentials><AccessKeyId>{ASSUMED_KEY}</AccessKeyId>\
             <SecretAccessKey>assumed-secret</SecretAccessKey><SessionToken>assumed-token</SessionToken>\
             <Expiration>{expires}</Expiration></Credentials><AssumedRoleUser>\
             <AssumedRoleId>AROASHARDLINE:{session}</AssumedRoleId>\
             <Arn>arn:aws:sts::111122223333:assumed-role/{role_name}/{session}</Arn>\
             </AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>ok</RequestId>\
             </ResponseMetadata></AssumeRoleResponse>",
            session = call.session_name
        ),
    )
}
