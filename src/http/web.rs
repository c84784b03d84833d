//! The browser client, embedded in the binary so `cargo run` needs no other files.
//!
//! [`ASSETS`] lists every file the page loads (the HTML, the stylesheet and each ES module
//! under `web/`), read at compile time with `include_str!`: nothing is read from disk at run
//! time. A module added to `web/` is served once it has a row here (a test below fails until
//! it has one), and `tests/browser/harness.mjs` lists the same paths.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// One embedded file of the web client.
pub(super) struct Asset {
    /// URL path it is served at.
    pub(super) path: &'static str,
    /// `Content-Type` it is served with.
    pub(super) content_type: &'static str,
    /// Its contents, from `web/` at build time.
    pub(super) body: &'static str,
}

macro_rules! asset {
    ($path:literal, $content_type:expr, $file:literal) => {
        Asset { path: $path, content_type: $content_type, body: include_str!(concat!("../../web/", $file)) }
    };
}

/// Every file of the web client, by URL path.
pub(super) const ASSETS: &[Asset] = &[
    asset!("/", HTML, "index.html"),
    asset!("/style.css", CSS, "style.css"),
    asset!("/app.js", JS, "app.js"),
    asset!("/socketchat.js", JS, "socketchat.js"),
    asset!("/socketchat/backoff.js", JS, "socketchat/backoff.js"),
    asset!("/socketchat/client.js", JS, "socketchat/client.js"),
    asset!("/socketchat/codec.js", JS, "socketchat/codec.js"),
    asset!("/socketchat/codes.js", JS, "socketchat/codes.js"),
    asset!("/socketchat/frames.js", JS, "socketchat/frames.js"),
    asset!("/socketchat/framing.js", JS, "socketchat/framing.js"),
    asset!("/socketchat/ids.js", JS, "socketchat/ids.js"),
    asset!("/socketchat/limits.js", JS, "socketchat/limits.js"),
    asset!("/socketchat/posts.js", JS, "socketchat/posts.js"),
    asset!("/socketchat/rate.js", JS, "socketchat/rate.js"),
    asset!("/socketchat/transport.js", JS, "socketchat/transport.js"),
    asset!("/socketchat/transport-websocket.js", JS, "socketchat/transport-websocket.js"),
    asset!("/socketchat/transport-webtransport.js", JS, "socketchat/transport-webtransport.js"),
    asset!("/ui/composer.js", JS, "ui/composer.js"),
    asset!("/ui/files.js", JS, "ui/files.js"),
    asset!("/ui/links.js", JS, "ui/links.js"),
    asset!("/ui/message-list.js", JS, "ui/message-list.js"),
    asset!("/ui/rooms.js", JS, "ui/rooms.js"),
    asset!("/ui/timeline.js", JS, "ui/timeline.js"),
];

/// A route per asset, each answering with its content type and `Cache-Control: no-cache`
/// (the browser revalidates, so a new binary's client is picked up on reload).
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(
            asset.path,
            get(move || async move {
                ([(header::CONTENT_TYPE, asset.content_type), (header::CACHE_CONTROL, "no-cache")], asset.body)
                    .into_response()
            }),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::{Path, PathBuf};

    /// Files under `web/` that the page loads: everything but the Node-only tests and fakes.
    fn served_files(dir: &Path, web: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(web).unwrap().to_string_lossy().replace('\\', "/");
            if path.is_dir() {
                if rel != "test" && rel != "test-support" {
                    served_files(&path, web, out);
                }
            } else if [".html", ".js", ".css"].iter().any(|ext| rel.ends_with(ext)) {
                out.push(rel);
            }
        }
    }

    #[test]
    fn every_file_of_the_page_is_embedded_once() {
        let web: PathBuf = [env!("CARGO_MANIFEST_DIR"), "web"].iter().collect();
        let mut on_disk = Vec::new();
        served_files(&web, &web, &mut on_disk);
        let paths: HashSet<&str> = ASSETS.iter().map(|a| a.path).collect();
        assert_eq!(paths.len(), ASSETS.len(), "an asset path is listed twice");
        for file in &on_disk {
            let path = if file == "index.html" { "/".to_owned() } else { format!("/{file}") };
            assert!(paths.contains(path.as_str()), "web/{file} is not in ASSETS: the page would get a 404 for {path}");
        }
        assert_eq!(on_disk.len(), ASSETS.len(), "ASSETS lists a file that is not in web/");
    }

    #[test]
    fn content_types_follow_the_extension() {
        for asset in ASSETS {
            let expected = match asset.path.rsplit('.').next() {
                Some("js") => JS,
                Some("css") => CSS,
                _ => HTML,
            };
            assert_eq!(asset.content_type, expected, "{}", asset.path);
        }
    }
}
