//! One worker connection: dialing (Unix socket or TCP), the handshake, and the long-lived
//! `Process` stream on which requests from every task are in flight at once, matched to their
//! callers by `batch_id`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};

use super::{ATTEMPT_TIMEOUT, MAX_MESSAGE, PROTOCOL_VERSION};
use crate::udf::proto::{self, worker_client::WorkerClient};

pub(super) type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<proto::BatchResponse>>>>;

/// One live connection: the request side of the stream and the callers awaiting responses.
#[derive(Clone)]
pub(super) struct Connection {
    pub(super) tx: mpsc::Sender<proto::BatchRequest>,
    pub(super) pending: Pending,
    pub(super) client: WorkerClient<Channel>,
}

/// Where a worker listens.
#[derive(Clone, Debug)]
pub(super) enum Address {
    /// A process this host started, on this Unix socket.
    Spawned(PathBuf),
    /// A worker someone else runs (`unix:/path` or `http://host:port`).
    Endpoint(String),
}

/// Connects and performs the handshake.
pub(super) async fn handshake(
    address: &Address,
) -> Result<(WorkerClient<Channel>, proto::HandshakeResponse), String> {
    let channel = match address {
        Address::Spawned(socket) => {
            if !socket.exists() {
                return Err("the socket does not exist yet".into());
            }
            connect_unix(socket.clone()).await
        }
        Address::Endpoint(e) => match e.strip_prefix("unix:") {
            Some(path) => connect_unix(PathBuf::from(path)).await,
            None => match Endpoint::try_from(e.clone()) {
                Ok(ep) => tuned(ep).connect_timeout(ATTEMPT_TIMEOUT).connect().await,
                Err(err) => return Err(format!("bad endpoint `{e}`: {err}")),
            },
        },
    }
    .map_err(|e| format!("cannot connect: {e}"))?;
    let mut client = WorkerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let request = proto::HandshakeRequest {
        protocol_version: PROTOCOL_VERSION,
        host_version: env!("CARGO_PKG_VERSION").into(),
    };
    let hello = client
        .handshake(request)
        .await
        .map_err(|e| format!("handshake failed: {}", e.message()))?;
    Ok((client, hello.into_inner()))
}

/// HTTP/2 flow-control windows that hold several answers of a few thousand records: with
/// the protocol's default of 64 KiB, a worker's answer waits for the host to read the one
/// before it (a window update) and the worker idles meanwhile.
const WINDOW: u32 = 8 << 20;

fn tuned(endpoint: Endpoint) -> Endpoint {
    endpoint
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(2 * WINDOW)
}

async fn connect_unix(path: PathBuf) -> Result<Channel, tonic::transport::Error> {
    // The URI is required by the API but unused: the connector dials the socket.
    tuned(Endpoint::from_static("http://[::]:50051"))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}

/// Opens the `Process` stream and a task that routes responses to their callers. When the
/// stream ends, every waiting caller's sender is dropped, which they see as a failure.
///
/// The stream is opened inside the task: a gRPC server may send its response headers only
/// with its first response, so waiting for them before sending a request would deadlock.
pub(super) async fn open_stream(client: WorkerClient<Channel>) -> Result<Connection, String> {
    let (tx, rx) = mpsc::channel::<proto::BatchRequest>(64);
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let routes = pending.clone();
    let mut streaming = client.clone();
    tokio::spawn(async move {
        match streaming
            .process(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(response) => {
                let mut inbound = response.into_inner();
                while let Ok(Some(resp)) = inbound.message().await {
                    let waiter = routes
                        .lock()
                        .ok()
                        .and_then(|mut p| p.remove(&resp.batch_id));
                    if let Some(w) = waiter {
                        let _ = w.send(resp);
                    }
                }
            }
            Err(status) => {
                tracing::debug!(error = %status.message(), "the Process stream could not be opened");
            }
        }
        if let Ok(mut p) = routes.lock() {
            p.clear();
        }
    });
    Ok(Connection {
        tx,
        pending,
        client,
    })
}

impl Connection {
    pub(super) async fn call(
        &self,
        request: proto::BatchRequest,
        timeout: Duration,
    ) -> Result<proto::BatchResponse, String> {
        let (done, wait) = oneshot::channel();
        let id = request.batch_id;
        self.pending
            .lock()
            .map_err(|_| "lock poisoned".to_string())?
            .insert(id, done);
        let sent = tokio::time::timeout(timeout, self.tx.send(request)).await;
        let result = match sent {
            Ok(Ok(())) => match tokio::time::timeout(timeout, wait).await {
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(_)) => Err("the worker closed the stream (it crashed or was killed)".into()),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            },
            Ok(Err(_)) => Err("the worker's stream is closed".into()),
            Err(_) => Err(format!("could not send within {timeout:?}")),
        };
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
        result
    }
}
