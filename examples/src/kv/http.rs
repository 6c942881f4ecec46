//! The HTTP side door (`--http ADDR`): `/metrics` in the Prometheus text
//! format, `/status` as JSON, `/health` (200 while the process runs) and
//! `/ready` (200 only while the replica serves writes; 503 with the reason
//! otherwise: joining, receiving state, recovering, minority, removed), for
//! load balancers, supervisors and `vsync-kv demo`.
//!
//! Guarantees: read-only; it never blocks the data path (it reads the
//! backend's status and the lock-free counters); it stops when `shutdown`
//! turns true.

use crate::kv::backend::{Backend, BackendMetrics, NodeStatus};
use crate::kv::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde::Serialize;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The `/status` document.
#[derive(Debug, Serialize)]
pub struct StatusDoc {
    /// Where this node stands in the group.
    #[serde(flatten)]
    pub status: NodeStatus,
    /// Replication counters.
    pub replication: BackendMetrics,
    /// The RESP address.
    pub resp: String,
    /// RESP commands answered.
    pub commands: u64,
    /// Whether the replica serves writes now.
    pub ready: bool,
    /// Why not, if it does not.
    pub not_ready: Option<String>,
}

struct Shared<B> {
    backend: B,
    metrics: Arc<Metrics>,
    resp: String,
}

/// Serves `/metrics` and `/status` on `listener` until `shutdown`.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    backend: B,
    metrics: Arc<Metrics>,
    resp: String,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        backend,
        metrics,
        resp,
    });
    let app = Router::new()
        .route("/metrics", get(metrics_handler::<B>))
        .route("/status", get(status_handler::<B>))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready_handler::<B>))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
}

async fn metrics_handler<B: Backend>(State(s): State<Arc<Shared<B>>>) -> impl IntoResponse {
    let text = s.metrics.render(&s.backend.status(), &s.backend.metrics());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

async fn ready_handler<B: Backend>(State(s): State<Arc<Shared<B>>>) -> impl IntoResponse {
    match s.backend.status().readiness() {
        Ok(()) => (axum::http::StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn status_handler<B: Backend>(State(s): State<Arc<Shared<B>>>) -> Json<StatusDoc> {
    let status = s.backend.status();
    let not_ready = status.readiness().err();
    Json(StatusDoc {
        ready: not_ready.is_none(),
        not_ready,
        status,
        replication: s.backend.metrics(),
        resp: s.resp.clone(),
        commands: s.metrics.total_commands(),
    })
}
