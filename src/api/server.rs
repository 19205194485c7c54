//! The API's HTTP/1 server: the accept loop, with the [`Limits`] that keep slow or
//! hostile clients from holding it.
//!
//! `axum::serve` has no timeouts and no connection limit: 2000 connections that never
//! finished their headers were held for as long as the clients liked, and ~1010 idle
//! ones exhausted a 1024 file-descriptor limit so that `/healthz` and writes timed out —
//! with nothing logged. Here:
//!
//! - each connection is served by hyper with a **header timeout**: a request head must
//!   arrive within `header_timeout` of the server starting to wait for it, on a new
//!   connection or an idle keep-alive one, or the connection is closed (so it is also
//!   the idle timeout);
//! - a request body must arrive within `body_timeout` of its head (see
//!   `DeadlineBody` in `super::deadline`);
//! - at most `max_connections` are served at once; a connection beyond that is
//!   **shed**: answered `503` with `Retry-After: 1` as soon as its request head arrived
//!   (at most 1 s; an HTTP client takes an answer before its request for a protocol
//!   error) and closed — cheaper than letting it queue, and the client learns to back off
//!   — and the shedding is logged (at once, then at most every 10 s with the count); at
//!   most 256 are being answered at once, beyond that a connection is just closed;
//! - when `accept` itself fails (file descriptors exhausted), that is logged the same
//!   way and accepting resumes after a short pause instead of spinning.
//!
//! Shutdown stops accepting, lets each connection finish the request it is in
//! (graceful), and closes whatever is still open `header_timeout` later.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, error, warn};

use super::config::Limits;

/// What a shed connection is told, in full.
const SHED_BODY: &str =
    r#"{"error":"the API is at its connection limit (api.max_connections); retry shortly"}"#;

/// Shed connections being answered at once; beyond this a connection is just closed,
/// so a flood cannot turn the answers themselves into what exhausts the process.
const MAX_SHEDDING: usize = 256;

/// How long a shed connection waits for the client's request head before answering: an
/// HTTP client takes an answer that comes before its request for a protocol error, not a
/// 503.
const SHED_HEAD_WAIT: Duration = Duration::from_secs(1);

/// How long a shed connection is kept after the answer to read what the client still
/// sends, so closing it does not reset the connection before the client read the 503.
const SHED_LINGER: Duration = Duration::from_millis(200);

/// How often a repeated condition (shedding, accept failures) is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` within `limits` until `shutdown`.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let shedding = Arc::new(Semaphore::new(MAX_SHEDDING));
    // Cancelled once the graceful part of a shutdown is over: close what is left.
    let force = CancellationToken::new();
    let mut shed_log = Throttled::new();
    let mut accept_log = Throttled::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                if let Some(since) = accept_log.note() {
                    error!(
                        error = %e,
                        failures = since,
                        "cannot accept API connections (file descriptors exhausted?); retrying"
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(shed) = shed_log.note() {
                warn!(
                    max_connections = limits.max_connections,
                    shed,
                    "API at its connection limit (api.max_connections): shedding new \
                     connections with 503"
                );
            }
            if let Ok(answering) = shedding.clone().try_acquire_owned() {
                connections.spawn(async move {
                    shed(stream).await;
                    drop(answering);
                });
            }
            continue;
        };
        let app = app.clone();
        let (shutdown, force) = (shutdown.clone(), force.clone());
        connections.spawn(async move {
            serve_connection(stream, app, limits, shutdown, force).await;
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.header_timeout, connections.wait())
        .await
        .is_err()
    {
        debug!("closing the API connections still open after the graceful shutdown");
        force.cancel();
        connections.wait().await;
    }
}

/// One connection, HTTP/1 with the header timeout; graceful on `shutdown`, dropped on
/// `force`.
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
    force: CancellationToken,
) {
    let service = TowerToHyperService::new(
        app.map_request(|request: hyper::Request<Incoming>| request.map(Body::new)),
    );
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut graceful = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    // Header timeouts and clients that hang up end up here: routine.
                    debug!(error = %e, "API connection ended");
                }
                return;
            }
            _ = shutdown.cancelled(), if !graceful => {
                graceful = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = force.cancelled() => return,
        }
    }
}

/// Answers a connection beyond the limit with 503 (once its request head arrived, or
/// [`SHED_HEAD_WAIT`] passed) and closes it.
async fn shed(mut stream: TcpStream) {
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{SHED_BODY}",
        SHED_BODY.len()
    );
    let head = async {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if let Ok(false) = tokio::time::timeout(SHED_HEAD_WAIT, head).await {
        // The client went away: nobody to answer.
        return;
    }
    let exchange = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Read (and drop) what the client sent, so the close is a FIN after the answer
        // rather than a reset that may discard it.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(SHED_LINGER, exchange).await;
}

/// A condition logged at once, then at most every [`LOG_EVERY`] with how often it
/// happened since.
struct Throttled {
    last: Option<Instant>,
    since: u64,
}

impl Throttled {
    fn new() -> Throttled {
        Throttled {
            last: None,
            since: 0,
        }
    }

    /// Counts one occurrence; `Some(count since the last line)` when a line is due.
    fn note(&mut self) -> Option<u64> {
        self.since += 1;
        if self.last.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_conditions_are_logged_once_per_interval_with_a_count() {
        let mut log = Throttled::new();
        assert_eq!(log.note(), Some(1));
        assert_eq!(log.note(), None);
        assert_eq!(log.note(), None);
        log.last = Some(Instant::now() - LOG_EVERY);
        assert_eq!(log.note(), Some(3));
    }
}
