//! The browser client, embedded in the binary so `cargo run` needs no other files.

use axum::http::header;
use axum::response::IntoResponse;

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}

pub(super) async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", include_str!("../../web/index.html"))
}

pub(super) async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", include_str!("../../web/app.js"))
}

pub(super) async fn socketchat_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", include_str!("../../web/socketchat.js"))
}

pub(super) async fn style_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", include_str!("../../web/style.css"))
}
