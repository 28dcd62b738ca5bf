//! Integration tests of `sync-transport-http` against a real HTTP server
//! (`tiny_http`) on 127.0.0.1 with an ephemeral port.

mod answers;
mod auth;
mod batch;
mod failure_body;
mod mapping;
mod pull;
mod requests;
mod unanswered;
mod worker;

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
pub(crate) enum Reply {
    /// Answer with this status, these headers and this body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// Never answer (the connection stays open until the server stops).
    Hang,
}

impl Reply {
    pub(crate) fn status(code: u16) -> Self {
        Self::Status(code, Vec::new(), String::new())
    }
}

/// A real HTTP server on 127.0.0.1, answering with `respond(n, request)`
/// where `n` counts requests from 0. Stops when dropped.
pub(crate) struct TestServer {
    pub(crate) base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub(crate) fn start(
        respond: impl Fn(usize, &Seen) -> Reply + Send + 'static,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0")?);
        let port = server
            .server_addr()
            .to_ip()
            .ok_or("not an ip listener")?
            .port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let server = Arc::clone(&server);
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut hanging = Vec::new();
                while let Ok(mut request) = server.recv() {
                    let mut body = String::new();
                    let _ = request.as_reader().read_to_string(&mut body);
                    let request_seen = Seen {
                        method: request.method().to_string(),
                        url: request.url().to_owned(),
                        headers: request
                            .headers()
                            .iter()
                            .map(|h| (h.field.to_string(), h.value.to_string()))
                            .collect(),
                        body,
                    };
                    let n = {
                        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                        seen.push(request_seen.clone());
                        seen.len() - 1
                    };
                    match respond(n, &request_seen) {
                        Reply::Status(code, headers, body) => {
                            let mut response =
                                tiny_http::Response::from_string(body).with_status_code(code);
                            for (name, value) in headers {
                                if let Ok(h) =
                                    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
                                {
                                    response = response.with_header(h);
                                }
                            }
                            let _ = request.respond(response);
                        }
                        Reply::Hang => hanging.push(request),
                    }
                }
            })
        };
        Ok(Self {
            base_url: format!("http://127.0.0.1:{port}"),
            seen,
            server,
            thread: Some(thread),
        })
    }

    /// Every request so far, in arrival order.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An operation with an id, as the outbox would send it.
pub(crate) fn op(id: &str, kind: &str, target: &str, payload: &str) -> sync_outbox::Operation {
    let mut op = sync_outbox::Operation::new(kind, target, payload);
    id.clone_into(&mut op.id);
    op
}

pub(crate) fn transport(
    base_url: &str,
) -> Result<sync_transport_http::HttpTransport, sync_transport_http::HttpTransportError> {
    sync_transport_http::HttpTransport::new(sync_transport_http::HttpTransportConfig {
        base_url: base_url.to_owned(),
        ..sync_transport_http::HttpTransportConfig::default()
    })
}
