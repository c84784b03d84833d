//! Files: `POST /api/uploads` stores one in the database (so any node serves it), a message
//! attaches it (PROTOCOL.md § 3), and `GET /api/uploads/{id}` serves it to its owner and to
//! whoever may see the room it was shared in; to anyone else, `404` as for no file at all.
//!
//! A file is served inline only when its bytes are one of a few image formats browsers render
//! safely (PNG, JPEG, GIF, WebP: never SVG, which can carry script); anything else is a
//! download (`Content-Disposition: attachment`). Every answer carries `nosniff` and a CSP
//! sandbox, so nothing uploaded runs as a page of ours.

use super::api::check_origin;
use super::{ApiError, authenticate};
use crate::node::Node;
use crate::wire::{MAX_CONTENT_TYPE_BYTES, MAX_FILE_NAME_BYTES};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

type ApiResult = Result<Response, ApiError>;

/// Image formats shown inline, recognised by their first bytes (whatever the client said).
fn sniff_image(data: &[u8]) -> Option<&'static str> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if data.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if data.len() >= 12 && data.starts_with(b"RIFF") && &data[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// Whether a file of this type is shown inline.
fn inline(content_type: &str) -> bool {
    matches!(content_type, "image/png" | "image/jpeg" | "image/gif" | "image/webp")
}

/// The type a file is stored and served with: a recognised image format from its bytes;
/// otherwise the declared type when it is a plain `type/subtype` (lowercased, parameters
/// dropped) that does not claim to be an image we would show inline; otherwise
/// `application/octet-stream`.
pub(crate) fn content_type_of(declared: Option<&str>, data: &[u8]) -> String {
    if let Some(image) = sniff_image(data) {
        return image.to_owned();
    }
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    let declared = declared.and_then(|d| d.split(';').next()).map(|d| d.trim().to_ascii_lowercase());
    match declared {
        Some(d)
            if d.len() <= MAX_CONTENT_TYPE_BYTES
                && d.split_once('/').is_some_and(|(t, s)| token(t) && token(s))
                && !inline(&d) =>
        {
            d
        }
        _ => "application/octet-stream".to_owned(),
    }
}

/// Whether a file name is acceptable: 1..=255 bytes, no control characters, no path.
pub(crate) fn valid_file_name(name: &str) -> bool {
    (1..=MAX_FILE_NAME_BYTES).contains(&name.len())
        && !name.chars().any(|c| c.is_control() || c == '/' || c == '\\')
        && name != "."
        && name != ".."
}

/// Characters kept as they are in `filename*` (RFC 5987 attr-char).
const ATTR_CHAR: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'!').remove(b'#').remove(b'$').remove(b'&').remove(b'+').remove(b'-').remove(b'.');

/// `Content-Disposition` for a file: an ASCII fallback name and the exact one (RFC 6266).
pub(crate) fn disposition(name: &str, inline: bool) -> String {
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let exact = utf8_percent_encode(name, ATTR_CHAR);
    let kind = if inline { "inline" } else { "attachment" };
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{exact}")
}

/// `POST /api/uploads?name=FILE` with the file's bytes as the body and its type as
/// `Content-Type` → `201 {"upload": {id, name, content_type, size}}`.
pub(super) async fn create(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    check_origin(&node, &headers)?;
    let claims = authenticate(&node, &headers).await?;
    let user_id = claims.user_id().unwrap_or_default();
    let name = query.get("name").map(String::as_str).unwrap_or("");
    if !valid_file_name(name) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid upload")
            .field("name", "1 to 255 bytes, no control characters, no / or \\"));
    }
    if body.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "the file is empty"));
    }
    node.upload_throttle.take(&user_id, std::time::Instant::now()).map_err(|wait| {
        tracing::warn!(user = user_id, "uploads throttled");
        ApiError::too_many("too many uploads, retry later", wait)
    })?;
    let declared = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let content_type = content_type_of(declared, &body);
    let upload = node.store.create_upload(user_id, name, &content_type, &body).await.map_err(ApiError::unavailable)?;
    tracing::info!(user = user_id, id = upload.attachment.id, size = body.len(), %content_type, "file uploaded");
    let a = &upload.attachment;
    let json = json!({"upload": {"id": a.id, "name": a.name, "content_type": a.content_type, "size": a.size}});
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

/// `GET /api/uploads/{id}`: the file, to its owner and to those who may see the room where it
/// was shared.
pub(super) async fn download(State(node): State<Arc<Node>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let claims = authenticate(&node, &headers).await?;
    let user_id = claims.user_id().unwrap_or_default();
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no such file");
    let id: u64 = id.parse().map_err(|_| not_found())?;
    // Each file being served is held in memory until its last byte is written: a bounded
    // number at once, whoever asks (a member fetching one file many times over included).
    let Ok(slot) = node.downloads_in_flight.clone().try_acquire_owned() else {
        tracing::warn!(user = user_id, "download refused: too many in flight");
        return Err(ApiError::busy("too many downloads in progress, retry shortly"));
    };
    let (upload, data) = node.store.upload(id).await.map_err(ApiError::unavailable)?.ok_or_else(not_found)?;
    let allowed = upload.owner_id == user_id
        || match upload.room_id {
            Some(room) => node.may_see(room, user_id).await.map_err(ApiError::unavailable)?,
            None => false,
        };
    if !allowed {
        return Err(not_found());
    }
    let a = &upload.attachment;
    let shown = inline(&a.content_type);
    let size = data.len();
    let mut response = Body::from_stream(chunks(Bytes::from(data), slot)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, size.into());
    let value =
        |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, value(&a.content_type));
    h.insert(header::CONTENT_DISPOSITION, value(&disposition(&a.name, shown)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    Ok(response)
}

/// A file's bytes in 64 KiB pieces, holding `slot` until the last one is taken (or the
/// client goes away and the body is dropped).
fn chunks(
    data: Bytes,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    const PIECE: usize = 64 * 1024;
    futures_util::stream::unfold((data, Some(slot)), |(mut rest, slot)| async move {
        if rest.is_empty() {
            drop(slot);
            return None;
        }
        let piece = rest.split_to(rest.len().min(PIECE));
        Some((Ok(piece), (rest, slot)))
    })
}

/// Takes one of the upload slots before the body is read, so at most `UPLOADS_IN_FLIGHT`
/// bodies are held in memory at once; a full house is `503` with `Retry-After`.
pub(super) async fn limit_in_flight(
    State(node): State<Arc<Node>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_slot) = node.uploads_in_flight.clone().try_acquire_owned() else {
        tracing::warn!("upload refused: too many in flight");
        return ApiError::busy("too many uploads in progress, retry shortly").into_response();
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recognised_images_are_inline_and_the_declared_type_never_makes_one() {
        let png = b"\x89PNG\r\n\x1a\n rest";
        assert_eq!(content_type_of(Some("text/plain"), png), "image/png", "the bytes decide");
        assert_eq!(content_type_of(Some("image/png"), b"<script>"), "application/octet-stream");
        assert_eq!(content_type_of(Some("image/svg+xml"), b"<svg/>"), "image/svg+xml");
        assert!(!inline("image/svg+xml"));
        assert_eq!(content_type_of(Some("Text/HTML; charset=utf-8"), b"<b>"), "text/html");
        assert_eq!(content_type_of(Some("weird"), b"x"), "application/octet-stream");
        assert_eq!(content_type_of(Some("a/b\r\nX-Evil: 1"), b"x"), "application/octet-stream");
        assert_eq!(content_type_of(None, b"GIF89a..."), "image/gif");
        assert_eq!(content_type_of(None, b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
        assert_eq!(content_type_of(None, &[0xff, 0xd8, 0xff, 0xe0]), "image/jpeg");
    }

    #[test]
    fn file_names_and_their_disposition() {
        assert!(valid_file_name("photo 1.png"));
        assert!(valid_file_name("résumé.pdf"));
        for bad in ["", "a/b", "a\\b", "a\nb", "..", &"x".repeat(256)] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
        assert_eq!(
            disposition("résumé \"v2\".pdf", false),
            "attachment; filename=\"r_sum_ _v2_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf"
        );
        assert!(disposition("a.png", true).starts_with("inline; "));
    }
}
