//! Counts every HTTP request the server receives, so a test can prove that a call Behavry
//! blocked never reached the upstream: read `GET /raw/count` before and after.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use axum::{
    Json, Router,
    extract::{Request, State},
    middleware::Next,
    response::Response,
    routing::get,
};
use serde::Serialize;

/// The path that reads the counter; requests to it are not counted, so reading is free.
pub const COUNT_PATH: &str = "/raw/count";

/// Shared number of requests received since start.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter(Arc<AtomicU64>);

impl RequestCounter {
    /// Requests counted so far.
    pub fn get(&self) -> u64 {
        // Relaxed: the count orders nothing else; a reader only needs an eventually exact total.
        self.0.load(Ordering::Relaxed)
    }

    fn increment(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Body of `GET /raw/count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RequestCount {
    /// Requests received on every route except `/raw/count`, since start.
    pub requests: u64,
}

/// axum middleware: counts the request before handing it on, on every route and method.
pub async fn count_requests(
    State(counter): State<RequestCounter>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() != COUNT_PATH {
        counter.increment();
    }
    next.run(request).await
}

/// The `GET /raw/count` route.
pub fn routes(counter: RequestCounter) -> Router {
    Router::new()
        .route(COUNT_PATH, get(read_count))
        .with_state(counter)
}

async fn read_count(State(counter): State<RequestCounter>) -> Json<RequestCount> {
    Json(RequestCount {
        requests: counter.get(),
    })
}
