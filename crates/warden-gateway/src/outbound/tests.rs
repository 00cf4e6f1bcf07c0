use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap as AxumHeaders, Method as AxumMethod, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::HeaderValue;

use super::*;

const SECRET_HEADER: &str = "x-upstream-key";
const SECRET_VALUE: &str = "injected-credential-1";

/// Requests seen by the other-origin server, as the value of its secret
/// header ("-" when absent).
type Seen = Arc<Mutex<Vec<String>>>;

/// State of the main test server: its own port and the other server's.
#[derive(Clone)]
struct Ports {
    main: u16,
    other: u16,
}

async fn spawn(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

fn redirect(status: AxumStatus, location: &str) -> Response {
    (
        status,
        [(axum::http::header::LOCATION, location.to_owned())],
    )
        .into_response()
}

/// Starts the other-origin server that records what it receives.
async fn spawn_other(seen: Seen) -> SocketAddr {
    let router = Router::new()
        .route(
            "/{*path}",
            any(
                |State(seen): State<Seen>, headers: AxumHeaders| async move {
                    let value = headers
                        .get(SECRET_HEADER)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    seen.lock().expect("lock").push(value);
                    "other origin"
                },
            ),
        )
        .with_state(seen);
    spawn(router).await
}

/// Serves `/echo` with "METHOD SECRET BODY", and the redirect routes of
/// the tests.
async fn main_route(
    State(ports): State<Ports>,
    Path(path): Path<String>,
    method: AxumMethod,
    headers: AxumHeaders,
    body: String,
) -> Response {
    let main = ports.main;
    let other = ports.other;
    match path.as_str() {
        "echo" => {
            let secret = headers
                .get(SECRET_HEADER)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("-");
            let content_type = headers
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("-");
            format!("{method} {secret} {content_type} {body}").into_response()
        }
        "cross" => redirect(
            AxumStatus::FOUND,
            &format!("http://127.0.0.1:{other}/steal"),
        ),
        "same" => redirect(AxumStatus::FOUND, "/echo"),
        "same-absolute" => redirect(AxumStatus::FOUND, &format!("http://127.0.0.1:{main}/echo")),
        "same-hex" => redirect(AxumStatus::FOUND, &format!("http://0x7f.1:{main}/echo")),
        "see-other" => redirect(AxumStatus::SEE_OTHER, "/echo"),
        "found" => redirect(AxumStatus::FOUND, "/echo"),
        "temporary" => redirect(AxumStatus::TEMPORARY_REDIRECT, "/echo"),
        "permanent" => redirect(AxumStatus::PERMANENT_REDIRECT, "/echo"),
        "metadata" => redirect(
            AxumStatus::FOUND,
            "http://169.254.169.254/latest/meta-data/",
        ),
        "metadata-decimal" => redirect(AxumStatus::FOUND, "http://2852039166/latest/"),
        "bad-location" => redirect(AxumStatus::FOUND, "http://[::1"),
        "ftp" => redirect(AxumStatus::FOUND, "ftp://127.0.0.1/file"),
        "userinfo" => redirect(
            AxumStatus::FOUND,
            &format!("http://user:pw@127.0.0.1:{main}/echo"),
        ),
        "no-location" => AxumStatus::FOUND.into_response(),
        other => match other
            .strip_prefix("chain/")
            .and_then(|n| n.parse::<u32>().ok())
        {
            Some(0) => redirect(AxumStatus::FOUND, "/echo"),
            Some(n) => redirect(AxumStatus::FOUND, &format!("/chain/{}", n - 1)),
            None => AxumStatus::NOT_FOUND.into_response(),
        },
    }
}

/// Starts both servers; returns the main server's base URL and the record
/// of the other server.
async fn servers() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let other = spawn_other(seen.clone()).await;
    // The main server needs its own port in its state, so bind first.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let main = listener.local_addr().expect("local address");
    let router = Router::new()
        .route("/{*path}", any(main_route))
        .with_state(Ports {
            main: main.port(),
            other: other.port(),
        });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://127.0.0.1:{}", main.port()), seen)
}

fn client(reach: Reach) -> OutboundClient {
    OutboundClient::new(reach, Duration::from_secs(10), Duration::from_secs(5))
        .expect("client builds")
}

fn request(method: Method, url: &str, body: &str) -> OutboundRequest {
    let mut sensitive = HeaderMap::new();
    sensitive.insert(SECRET_HEADER, HeaderValue::from_static(SECRET_VALUE));
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    OutboundRequest {
        method,
        url: Url::parse(url).expect("test URL parses"),
        headers,
        sensitive,
        body: Bytes::from(body.to_owned()),
    }
}

#[tokio::test]
async fn cross_origin_redirect_not_followed() {
    let (base, seen) = servers().await;
    let outcome = client(Reach::Private)
        .send(request(Method::GET, &format!("{base}/cross"), ""), 5)
        .await
        .expect("send succeeds");
    assert_eq!(outcome.response.status(), StatusCode::FOUND);
    let refused = outcome.redirect_refused.expect("redirect refused");
    assert!(refused.ends_with("/steal"), "{refused}");
    assert_eq!(outcome.hops, 0);
    assert_eq!(outcome.final_url.path(), "/cross");
    assert!(
        seen.lock().expect("lock").is_empty(),
        "other origin was called"
    );
}

#[tokio::test]
async fn same_origin_redirect_keeps_credential() {
    let (base, _) = servers().await;
    for path in ["same", "same-absolute", "same-hex"] {
        let outcome = client(Reach::Private)
            .send(request(Method::GET, &format!("{base}/{path}"), ""), 5)
            .await
            .expect("send succeeds");
        assert_eq!(outcome.hops, 1, "{path}");
        assert_eq!(outcome.redirect_refused, None, "{path}");
        assert_eq!(outcome.final_url.path(), "/echo", "{path}");
        let text = outcome.response.text().await.expect("body");
        assert_eq!(text, format!("GET {SECRET_VALUE} text/plain "), "{path}");
    }
}

#[tokio::test]
async fn sensitive_header_replaces_caller_header() {
    let (base, _) = servers().await;
    let mut request = request(Method::GET, &format!("{base}/echo"), "");
    request
        .headers
        .insert(SECRET_HEADER, HeaderValue::from_static("agent-supplied"));
    let outcome = client(Reach::Private)
        .send(request, 0)
        .await
        .expect("send succeeds");
    let text = outcome.response.text().await.expect("body");
    assert_eq!(text, format!("GET {SECRET_VALUE} text/plain "));
}

#[tokio::test]
async fn redirect_methods_follow_fetch_rules() {
    let (base, _) = servers().await;
    for (path, method, expected) in [
        ("see-other", Method::POST, "GET {secret} - ".to_owned()),
        ("see-other", Method::PUT, "GET {secret} - ".to_owned()),
        ("found", Method::POST, "GET {secret} - ".to_owned()),
        (
            "found",
            Method::PUT,
            "PUT {secret} text/plain payload".to_owned(),
        ),
        (
            "temporary",
            Method::POST,
            "POST {secret} text/plain payload".to_owned(),
        ),
        (
            "permanent",
            Method::POST,
            "POST {secret} text/plain payload".to_owned(),
        ),
    ] {
        let expected = expected.replace("{secret}", SECRET_VALUE);
        let outcome = client(Reach::Private)
            .send(
                request(method.clone(), &format!("{base}/{path}"), "payload"),
                5,
            )
            .await
            .expect("send succeeds");
        let text = outcome.response.text().await.expect("body");
        assert_eq!(text, expected, "{path} {method}");
    }
}

#[tokio::test]
async fn redirect_chain_within_limit_followed() {
    let (base, _) = servers().await;
    let outcome = client(Reach::Private)
        .send(request(Method::GET, &format!("{base}/chain/2"), ""), 3)
        .await
        .expect("send succeeds");
    assert_eq!(outcome.hops, 3);
    assert_eq!(outcome.response.status(), StatusCode::OK);
}

#[tokio::test]
async fn redirect_chain_over_limit_fails() {
    let (base, _) = servers().await;
    let error = client(Reach::Private)
        .send(request(Method::GET, &format!("{base}/chain/5"), ""), 3)
        .await
        .expect_err("too many redirects");
    assert!(
        matches!(error, OutboundError::TooManyRedirects { max: 3, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn zero_redirect_limit_rejects_first_redirect() {
    let (base, _) = servers().await;
    let error = client(Reach::Private)
        .send(request(Method::GET, &format!("{base}/same"), ""), 0)
        .await
        .expect_err("too many redirects");
    assert!(
        matches!(error, OutboundError::TooManyRedirects { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn redirect_to_metadata_denied() {
    let (base, _) = servers().await;
    for path in ["metadata", "metadata-decimal"] {
        let error = client(Reach::Private)
            .send(request(Method::GET, &format!("{base}/{path}"), ""), 5)
            .await
            .expect_err("metadata denied");
        let OutboundError::Denied { url, reason } = &error else {
            panic!("expected a denial, got {error}");
        };
        assert!(
            url.starts_with("http://169.254.169.254/latest/"),
            "{path}: {url}"
        );
        assert!(reason.contains("cloud metadata"), "{reason}");
    }
}

#[tokio::test]
async fn invalid_location_is_bad_redirect() {
    let (base, _) = servers().await;
    let error = client(Reach::Private)
        .send(request(Method::GET, &format!("{base}/bad-location"), ""), 5)
        .await
        .expect_err("bad redirect");
    assert!(
        matches!(error, OutboundError::BadRedirect { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn other_scheme_redirect_not_followed() {
    let (base, _) = servers().await;
    let outcome = client(Reach::Private)
        .send(request(Method::GET, &format!("{base}/ftp"), ""), 5)
        .await
        .expect("send succeeds");
    assert_eq!(
        outcome.redirect_refused.as_deref(),
        Some("ftp://127.0.0.1/file")
    );
}

#[tokio::test]
async fn userinfo_redirect_denied() {
    let (base, _) = servers().await;
    let error = client(Reach::Private)
        .send(request(Method::GET, &format!("{base}/userinfo"), ""), 5)
        .await
        .expect_err("user info denied");
    let OutboundError::Denied { reason, .. } = &error else {
        panic!("expected a denial, got {error}");
    };
    assert!(reason.contains("user info"), "{reason}");
}

#[tokio::test]
async fn redirect_without_location_returned() {
    let (base, _) = servers().await;
    let outcome = client(Reach::Private)
        .send(request(Method::GET, &format!("{base}/no-location"), ""), 5)
        .await
        .expect("send succeeds");
    assert_eq!(outcome.response.status(), StatusCode::FOUND);
    assert_eq!(outcome.redirect_refused, None);
    assert_eq!(outcome.hops, 0);
}

#[tokio::test]
async fn localhost_denied_under_public() {
    let (base, _) = servers().await;
    let port = Url::parse(&base).expect("base").port().expect("port");
    let error = client(Reach::Public)
        .send(
            request(Method::GET, &format!("http://localhost:{port}/echo"), ""),
            5,
        )
        .await
        .expect_err("localhost denied");
    let OutboundError::Denied { url, reason } = &error else {
        panic!("expected a denial, got {error}");
    };
    assert_eq!(url, &format!("http://localhost:{port}/echo"));
    assert!(reason.contains("localhost"), "{reason}");
    assert!(reason.contains("loopback"), "{reason}");
}

#[tokio::test]
async fn loopback_literal_denied_under_public() {
    let (base, _) = servers().await;
    let error = client(Reach::Public)
        .send(request(Method::GET, &format!("{base}/echo"), ""), 5)
        .await
        .expect_err("loopback denied");
    assert!(matches!(error, OutboundError::Denied { .. }), "{error}");
}

#[tokio::test]
async fn localhost_allowed_under_private() {
    let (base, _) = servers().await;
    let port = Url::parse(&base).expect("base").port().expect("port");
    let outcome = client(Reach::Private)
        .send(
            request(Method::GET, &format!("http://localhost:{port}/echo"), ""),
            5,
        )
        .await
        .expect("send succeeds");
    assert_eq!(outcome.response.status(), StatusCode::OK);
}

#[tokio::test]
async fn refused_connection_is_send_error() {
    // Bind and drop a listener to get a port that nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    let error = client(Reach::Private)
        .send(
            request(Method::GET, &format!("http://127.0.0.1:{port}/"), ""),
            5,
        )
        .await
        .expect_err("connection refused");
    let OutboundError::Send(message) = &error else {
        panic!("expected a send error, got {error}");
    };
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
}

/// Parses `text` as a URL and checks it under `reach`.
fn check(text: &str, reach: Reach) -> Result<(), OutboundError> {
    let url = Url::parse(text).expect("test URL parses");
    check_url(&url, reach)
}

#[test]
fn loopback_spellings_denied_under_public() {
    for text in [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.1/",
        "http://0x7f.0x0.0x0.0x1/",
        "http://0177.0.0.1/",
        "http://017700000001/",
        "http://127.1/",
        "http://127.0.1/",
        "http://127.0.0.1./",
        "http://%31%32%37.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[0:0:0:0:0:ffff:127.0.0.1]/",
        "http://[::127.0.0.1]/",
        "http://[64:ff9b::127.0.0.1]/",
        "http://[2002:7f00:1::]/",
        "http://0/",
        "http://0.0.0.0/",
        "http://[::]/",
        "HTTP://127.0.0.1:8080/",
        "https://127.0.0.1/",
        "http://10.0.0.1/",
        "http://0xa.1/",
        "http://192.168.1.1/",
        "http://3232235777/",
        "http://[fd00::1]/",
    ] {
        let result = check(text, Reach::Public);
        assert!(
            matches!(result, Err(OutboundError::Denied { .. })),
            "{text}: {result:?}"
        );
    }
}

#[test]
fn metadata_spellings_denied_under_private() {
    for text in [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://0xa9.0xfe.0xa9.0xfe/",
        "http://0251.0376.0251.0376/",
        "http://169.254.43518/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::]/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://168.63.129.16/",
    ] {
        for reach in [Reach::Public, Reach::Private] {
            let result = check(text, reach);
            let Err(OutboundError::Denied { reason, .. }) = &result else {
                panic!("{text} under {reach:?}: {result:?}");
            };
            assert!(reason.contains("cloud metadata"), "{text}: {reason}");
        }
    }
}

#[test]
fn loopback_spellings_allowed_under_private() {
    for text in [
        "http://2130706433/",
        "http://0x7f.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost:8080/",
    ] {
        assert!(check(text, Reach::Private).is_ok(), "{text}");
    }
}

#[test]
fn public_urls_allowed() {
    for text in [
        "https://api.example.com/v1/items?q=1",
        "http://8.8.8.8/",
        "http://134744072/",
        "https://[2606:4700:4700::1111]/",
    ] {
        assert!(check(text, Reach::Public).is_ok(), "{text}");
    }
}

#[test]
fn other_schemes_and_userinfo_denied() {
    for text in [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://user:pw@example.com/",
        "http://user@example.com/",
    ] {
        let result = check(text, Reach::Public);
        assert!(
            matches!(result, Err(OutboundError::Denied { .. })),
            "{text}: {result:?}"
        );
    }
}

#[test]
fn client_keeps_reach() {
    assert_eq!(client(Reach::Public).reach(), Reach::Public);
}
