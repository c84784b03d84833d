//! REST API, health endpoints and the served web client, over real HTTP.

mod support;

use serde_json::{Value, json};
use support::*;

async fn post(server: &TestServer, path: &str, body: Value) -> reqwest::Response {
    server.http.post(server.url(path)).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn registration_validates_and_refuses_duplicates() {
    let server = TestServer::start().await;
    let bad = post(&server, "/api/auth/register", json!({"username": "a", "email": "nope", "password": "short"})).await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    for field in ["username", "email", "password"] {
        assert!(body["fields"][field].is_string(), "message for {field}: {body}");
    }
    let malformed = server.http.post(server.url("/api/auth/register")).body("{not json").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert!(malformed.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("JSON"));

    let ok = post(
        &server,
        "/api/auth/register",
        json!({"username": "alice", "email": "alice@example.com", "password": "correct horse"}),
    )
    .await;
    assert_eq!(ok.status(), 201);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"), "{cookie}");
    assert_eq!(ok.json::<Value>().await.unwrap()["user"]["username"], "alice");

    let same_name = post(
        &server,
        "/api/auth/register",
        json!({"username": "ALICE", "email": "other@example.com", "password": "correct horse"}),
    )
    .await;
    assert_eq!(same_name.status(), 409);
    assert!(same_name.json::<Value>().await.unwrap()["fields"]["username"].is_string());
    let same_email = post(
        &server,
        "/api/auth/register",
        json!({"username": "alice2", "email": "Alice@Example.com", "password": "correct horse"}),
    )
    .await;
    assert_eq!(same_email.status(), 409);
    assert!(same_email.json::<Value>().await.unwrap()["fields"]["email"].is_string());
}

#[tokio::test]
async fn login_answers_one_401_for_every_failure() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let wrong_password =
        post(&server, "/api/auth/login", json!({"email": "alice@example.com", "password": "wrong password"})).await;
    let unknown =
        post(&server, "/api/auth/login", json!({"email": "nobody@example.com", "password": "correct horse battery"}))
            .await;
    assert_eq!((wrong_password.status().as_u16(), unknown.status().as_u16()), (401, 401));
    let (a, b): (Value, Value) = (wrong_password.json().await.unwrap(), unknown.json().await.unwrap());
    assert_eq!(a, b, "the same message whatever the cause");
    let ok =
        post(&server, "/api/auth/login", json!({"email": "ALICE@example.com", "password": "correct horse battery"}))
            .await;
    assert_eq!(ok.status(), 200);
    let token = token_from(&ok).unwrap();
    let me: Value = server.get("/api/auth/me", &token).await.json().await.unwrap();
    assert_eq!(me["user"]["email"], "alice@example.com");
    assert!(me["user"].get("password_hash").is_none());
}

#[tokio::test]
async fn cross_origin_posts_are_refused() {
    let server = TestServer::start().await;
    let response = server
        .http
        .post(server.url("/api/auth/login"))
        .header("origin", "http://evil.example")
        .json(&json!({"email": "a@example.com", "password": "whatever1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn api_needs_a_session_and_lists_channels_and_presence() {
    let server = TestServer::start().await;
    for path in ["/api/auth/me", "/api/channels", "/api/presence/online", "/api/channels/general/messages"] {
        assert_eq!(server.http.get(server.url(path)).send().await.unwrap().status(), 401, "{path}");
    }
    let token = server.register("alice").await;
    let channels: Value = server.get("/api/channels", &token).await.json().await.unwrap();
    let names: Vec<&str> =
        channels["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["general", "engineering", "design", "support"]);
    let online: Value = server.get("/api/presence/online", &token).await.json().await.unwrap();
    assert_eq!(online["users"], json!([]));
}

#[tokio::test]
async fn health_readiness_metrics_and_the_web_client() {
    let server = TestServer::start().await;
    let get = |path: &'static str| server.http.get(server.url(path)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("socketchat_connections_open 0"), "{metrics}");
    let index = get("/").await.unwrap();
    assert_eq!(index.status(), 200);
    let csp = index.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'self'"));
    let transport: Value = get("/api/transport").await.unwrap().json().await.unwrap();
    let wt = transport["webtransport"].as_str().expect("WebTransport offered");
    let wt_origin = wt.trim_end_matches("/wt");
    assert!(csp.contains(&format!("connect-src 'self' {wt_origin}")), "the page may open {wt_origin}: {csp}");
    let port = wt_origin.rsplit(':').next().unwrap();
    assert_eq!(index.headers()["alt-svc"].to_str().unwrap(), format!("h3=\":{port}\"; ma=86400"));
    assert_eq!(transport["websocket"], format!("ws://{}/ws", server.addr));
    assert!(index.text().await.unwrap().contains("src=\"/app.js\""));
    for asset in ["/app.js", "/socketchat.js", "/style.css"] {
        assert_eq!(get(asset).await.unwrap().status(), 200, "{asset}");
    }
    assert_eq!(get("/nope").await.unwrap().status(), 404);
    let ws_without_upgrade = get("/ws").await.unwrap();
    assert_eq!(ws_without_upgrade.status(), 400);
}
