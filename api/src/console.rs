//! The web console: plain HTML, CSS and JavaScript modules under `api/console/`,
//! embedded in the binary so it works offline. It is a client of the public
//! GraphQL API like any other (it holds no route of its own beyond its files):
//! every page path answers with the same `index.html`, which routes in the browser.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The console's files: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../console/app.js")),
    ("graphql.js", "text/javascript; charset=utf-8", include_str!("../console/graphql.js")),
    ("logview.js", "text/javascript; charset=utf-8", include_str!("../console/logview.js")),
    ("terminal.js", "text/javascript; charset=utf-8", include_str!("../console/terminal.js")),
    ("console.css", "text/css; charset=utf-8", include_str!("../console/console.css")),
];

const INDEX: &str = include_str!("../console/index.html");

/// `/` and the console's page paths (`/environments/APP/ENV`, `/runs/ID`), and its
/// files under `/console/`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/environments/{app}/{env}", get(index))
        .route("/runs/{id}", get(index))
        .route("/console/{file}", get(asset))
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => page(content_type, body),
        None => (StatusCode::NOT_FOUND, "no such console file").into_response(),
    }
}

/// A console file. `no-cache` makes the browser ask again (and get the version
/// this binary embeds) rather than run the scripts of an older one.
fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, header::HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}
