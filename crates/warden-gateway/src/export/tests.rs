use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};
use warden_core::Decision;
use warden_store::NewAuditRecord;

use super::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ROOT_SPAN: &str = "1000000000000001";
const DECISION_SPAN: &str = "2000000000000002";
const RESULT_SPAN: &str = "3000000000000003";
const WAIT: Duration = Duration::from_secs(10);

/// An OTLP collector on 127.0.0.1 that stores every request and returns
/// the scripted responses, then 200 with `{}`.
#[derive(Default)]
struct Collector {
    requests: Mutex<Vec<(HeaderMap, Bytes)>>,
    responses: Mutex<VecDeque<(StatusCode, &'static str)>>,
}

impl Collector {
    fn requests(&self) -> Vec<(HeaderMap, Bytes)> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn request_count(&self) -> usize {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

async fn collect(
    State(collector): State<Arc<Collector>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    collector
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((headers, body));
    let scripted = collector
        .responses
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop_front();
    let (status, body) = scripted.unwrap_or((StatusCode::OK, "{}"));
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Starts a collector with `responses` and returns it with its traces URL.
async fn start_collector(responses: &[(StatusCode, &'static str)]) -> (Arc<Collector>, String) {
    let collector = Arc::new(Collector::default());
    collector
        .responses
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(responses.iter().copied());
    let router = Router::new()
        .route("/v1/traces", post(collect))
        .with_state(Arc::clone(&collector));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (collector, format!("http://{addr}/v1/traces"))
}

fn record(seq: i64, kind: &str, span: &str, parent: Option<&str>, detail: Value) -> AuditRecord {
    AuditRecord {
        seq,
        record: NewAuditRecord {
            time_us: 1_700_000_000_000_000 + seq,
            trace_id: TRACE.into(),
            span_id: span.into(),
            parent_span_id: parent.map(str::to_owned),
            task_id: "task-1".into(),
            agent: "spiffe://warden.local/agent/a".into(),
            user: "alice@acme.test".into(),
            kind: kind.into(),
            target: Some("files__read_file".into()),
            decision: Some(Decision::Allow),
            policy_ids: vec!["read-notes".into()],
            reason: Some("permitted".into()),
            detail,
        },
        prev_hash: format!("{:064x}", seq - 1),
        hash: format!("{seq:064x}"),
    }
}

fn task_records() -> Vec<AuditRecord> {
    vec![
        record(
            1,
            "task.start",
            ROOT_SPAN,
            Some(""),
            json!({ "intent": "notes" }),
        ),
        record(
            2,
            "tool.decision",
            DECISION_SPAN,
            Some(ROOT_SPAN),
            json!({ "arguments_sha256": "00" }),
        ),
        record(
            3,
            "tool.result",
            RESULT_SPAN,
            Some(DECISION_SPAN),
            json!({ "outcome": "result", "duration_ms": 2.0 }),
        ),
    ]
}

fn otlp_config(endpoint: &str) -> ExportConfig {
    ExportConfig {
        otlp_endpoint: Some(endpoint.to_owned()),
        batch_interval_ms: 20,
        timeout_seconds: 2,
        ..ExportConfig::default()
    }
}

/// Starts an exporter whose environment has only `OTLP_TEST_KEY` and whose
/// retries start after 10 ms.
fn start(config: &ExportConfig) -> Arc<Exporter> {
    let lookup = |name: &str| (name == "OTLP_TEST_KEY").then(|| "test-key-value".to_owned());
    Exporter::start_with(
        config,
        &StartOptions {
            lookup: &lookup,
            first_backoff: Duration::from_millis(10),
        },
    )
    .expect("exporter starts")
    .expect("a destination is configured")
}

/// Waits until `condition` holds, failing after [`WAIT`].
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn otlp_counts(exporter: &Exporter) -> ExportCounts {
    exporter.otlp_counts().expect("OTLP is configured")
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!("warden-export-{}", uuid::Uuid::new_v4()))
        .join("nested")
        .join(name)
}

#[tokio::test]
async fn start_returns_none_without_destinations() {
    let exporter = Exporter::start(&ExportConfig::default()).expect("start succeeds");
    assert!(exporter.is_none());
}

#[tokio::test]
async fn start_rejects_zero_queue_capacity() {
    let config = ExportConfig {
        queue_capacity: 0,
        ..otlp_config("http://127.0.0.1:4318/v1/traces")
    };
    let error = Exporter::start(&config)
        .err()
        .expect("capacity 0 is an error");
    assert!(
        error.to_string().contains("export.queue_capacity"),
        "{error}"
    );
}

#[tokio::test]
async fn otlp_posts_batch_as_otlp_json() {
    let (collector, endpoint) = start_collector(&[]).await;
    let config = ExportConfig {
        otlp_headers_env: BTreeMap::from([("x-api-key".to_owned(), "OTLP_TEST_KEY".to_owned())]),
        service_name: "warden-unit".into(),
        ..otlp_config(&endpoint)
    };
    let exporter = start(&config);
    exporter.committed(&task_records());
    wait_until("3 spans sent", || otlp_counts(&exporter).sent == 3).await;

    let requests = collector.requests();
    assert_eq!(requests.len(), 1);
    let (headers, body) = &requests[0];
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-api-key"], "test-key-value");
    let body: Value = serde_json::from_slice(body).expect("body is JSON");
    let resource = &body["resourceSpans"][0];
    assert_eq!(
        resource["resource"]["attributes"][0]["value"]["stringValue"],
        "warden-unit"
    );
    let spans = resource["scopeSpans"][0]["spans"]
        .as_array()
        .expect("spans is an array");
    assert_eq!(spans.len(), 3);
    assert!(spans.iter().all(|span| span["traceId"] == TRACE));
    assert_eq!(spans[0]["spanId"], ROOT_SPAN);
    assert!(spans[0].get("parentSpanId").is_none());
    assert_eq!(spans[1]["parentSpanId"], ROOT_SPAN);
    assert_eq!(spans[2]["parentSpanId"], DECISION_SPAN);
    assert_eq!(spans[2]["kind"], 3);
    assert_eq!(
        otlp_counts(&exporter),
        ExportCounts {
            sent: 3,
            dropped: 0,
            failed: 0
        }
    );
    exporter.shutdown().await;
}

#[tokio::test]
async fn otlp_splits_batches_at_max_spans() {
    let (collector, endpoint) = start_collector(&[]).await;
    let config = ExportConfig {
        batch_max_spans: 2,
        ..otlp_config(&endpoint)
    };
    let exporter = start(&config);
    exporter.committed(&task_records());
    wait_until("3 spans sent", || otlp_counts(&exporter).sent == 3).await;
    let sizes: Vec<usize> = collector
        .requests()
        .iter()
        .map(|(_, body)| {
            let body: Value = serde_json::from_slice(body).expect("body is JSON");
            body["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .map_or(0, Vec::len)
        })
        .collect();
    assert_eq!(sizes, vec![2, 1]);
    exporter.shutdown().await;
}

#[tokio::test]
async fn otlp_retries_unavailable_then_sends() {
    let (collector, endpoint) = start_collector(&[
        (StatusCode::SERVICE_UNAVAILABLE, "{}"),
        (StatusCode::TOO_MANY_REQUESTS, "{}"),
    ])
    .await;
    let exporter = start(&otlp_config(&endpoint));
    exporter.committed(&task_records()[..1]);
    wait_until("1 span sent", || otlp_counts(&exporter).sent == 1).await;
    assert_eq!(collector.request_count(), 3);
    assert_eq!(otlp_counts(&exporter).failed, 0);
    exporter.shutdown().await;
}

#[tokio::test]
async fn otlp_gives_up_after_two_retries() {
    let (collector, endpoint) = start_collector(&[
        (StatusCode::BAD_GATEWAY, "{}"),
        (StatusCode::GATEWAY_TIMEOUT, "{}"),
        (StatusCode::SERVICE_UNAVAILABLE, "{}"),
    ])
    .await;
    let exporter = start(&otlp_config(&endpoint));
    exporter.committed(&task_records()[..2]);
    wait_until("2 spans failed", || otlp_counts(&exporter).failed == 2).await;
    assert_eq!(collector.request_count(), 3);
    assert_eq!(otlp_counts(&exporter).sent, 0);
    exporter.shutdown().await;
}

#[tokio::test]
async fn otlp_does_not_retry_bad_request() {
    let (collector, endpoint) =
        start_collector(&[(StatusCode::BAD_REQUEST, r#"{"message":"bad span"}"#)]).await;
    let exporter = start(&otlp_config(&endpoint));
    exporter.committed(&task_records()[..1]);
    wait_until("1 span failed", || otlp_counts(&exporter).failed == 1).await;
    // A retry would arrive within milliseconds; give it time to show up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(collector.request_count(), 1);
    exporter.shutdown().await;
}

#[tokio::test]
async fn otlp_counts_partial_success_rejections() {
    let (_collector, endpoint) = start_collector(&[(
        StatusCode::OK,
        r#"{"partialSuccess":{"rejectedSpans":"1","errorMessage":"too old"}}"#,
    )])
    .await;
    let exporter = start(&otlp_config(&endpoint));
    exporter.committed(&task_records());
    wait_until("3 spans settled", || {
        let counts = otlp_counts(&exporter);
        counts.sent + counts.failed == 3
    })
    .await;
    assert_eq!(otlp_counts(&exporter).sent, 2);
    assert_eq!(otlp_counts(&exporter).failed, 1);
    exporter.shutdown().await;
}

#[tokio::test]
async fn otlp_counts_unreachable_endpoint_as_failed() {
    // A port that was free a moment ago: nothing listens on it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    let exporter = start(&otlp_config(&format!("http://{addr}/v1/traces")));
    exporter.committed(&task_records()[..1]);
    wait_until("1 span failed", || otlp_counts(&exporter).failed == 1).await;
    assert_eq!(otlp_counts(&exporter).sent, 0);
    exporter.shutdown().await;
}

#[tokio::test]
async fn otlp_skips_records_with_invalid_ids() {
    let (collector, endpoint) = start_collector(&[]).await;
    let exporter = start(&otlp_config(&endpoint));
    let mut records = task_records();
    records[1].record.trace_id = "not-a-trace-id".into();
    exporter.committed(&records);
    wait_until("3 spans settled", || {
        let counts = otlp_counts(&exporter);
        counts.sent + counts.failed == 3
    })
    .await;
    assert_eq!(otlp_counts(&exporter).sent, 2);
    assert_eq!(otlp_counts(&exporter).failed, 1);
    let (_, body) = &collector.requests()[0];
    let body: Value = serde_json::from_slice(body).expect("body is JSON");
    let spans = &body["resourceSpans"][0]["scopeSpans"][0]["spans"];
    assert_eq!(spans.as_array().map_or(0, Vec::len), 2);
    exporter.shutdown().await;
}

#[test]
fn committed_drops_records_when_queue_is_full() {
    // No worker takes from this queue, so it stays full after 2 records.
    let (sender, _receiver) = mpsc::channel(2);
    let state = Arc::new(DestinationState::new("otlp", "spans"));
    let exporter = Exporter {
        otlp: Some(Queue {
            sender,
            state: Arc::clone(&state),
        }),
        jsonl: None,
        stop: CancellationToken::new(),
        workers: Mutex::new(Vec::new()),
    };
    let records: Vec<AuditRecord> = (1..=5)
        .map(|seq| {
            record(
                seq,
                "tool.decision",
                DECISION_SPAN,
                Some(ROOT_SPAN),
                json!({}),
            )
        })
        .collect();
    exporter.committed(&records);
    assert_eq!(otlp_counts(&exporter).dropped, 3);
    assert_eq!(otlp_counts(&exporter).sent, 0);
    assert_eq!(state.pending.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn committed_after_shutdown_counts_dropped() {
    let (collector, endpoint) = start_collector(&[]).await;
    let exporter = start(&otlp_config(&endpoint));
    exporter.shutdown().await;
    exporter.committed(&task_records());
    assert_eq!(otlp_counts(&exporter).dropped, 3);
    assert_eq!(collector.request_count(), 0);
}

#[tokio::test]
async fn shutdown_sends_queued_spans_at_once() {
    let (collector, endpoint) = start_collector(&[]).await;
    let config = ExportConfig {
        // Far longer than the test waits: only shutdown can send the batch.
        batch_interval_ms: 60_000,
        ..otlp_config(&endpoint)
    };
    let exporter = start(&config);
    exporter.committed(&task_records());
    let started = Instant::now();
    exporter.shutdown().await;
    assert!(
        started.elapsed() < SHUTDOWN_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(otlp_counts(&exporter).sent, 3);
    assert_eq!(collector.request_count(), 1);
}

#[tokio::test]
async fn shutdown_gives_up_on_silent_endpoint() {
    // This endpoint accepts connections and never responds, and the OTLP
    // timeout is longer than the shutdown timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = silent.local_addr().expect("local address");
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });
    let config = ExportConfig {
        timeout_seconds: 60,
        ..otlp_config(&format!("http://{addr}/v1/traces"))
    };
    let exporter = start(&config);
    exporter.committed(&task_records());

    let started = Instant::now();
    exporter.shutdown().await;
    let elapsed = started.elapsed();
    assert!(elapsed >= SHUTDOWN_TIMEOUT, "{elapsed:?}");
    assert!(
        elapsed < SHUTDOWN_TIMEOUT + Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_eq!(otlp_counts(&exporter).failed, 3);
    assert_eq!(otlp_counts(&exporter).sent, 0);
    held.abort();
}

#[tokio::test]
async fn jsonl_appends_record_and_checkpoint_lines() {
    let path = temp_path("export.jsonl");
    let config = ExportConfig {
        jsonl_path: Some(path.clone()),
        ..ExportConfig::default()
    };
    let exporter = start(&config);
    let records = task_records();
    exporter.committed(&records[..2]);
    exporter.checkpointed(&Checkpoint {
        seq: 2,
        hash: records[1].hash.clone(),
        created_at: 1_700_000_000,
        signature: "eyJhbGciOiJFUzI1NiJ9.e30.c2ln".into(),
    });
    exporter.committed(&records[2..]);
    exporter.shutdown().await;

    let text = std::fs::read_to_string(&path).expect("the file exists");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["type"], "record");
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[0]["hash"], records[0].hash);
    assert_eq!(lines[0]["prev_hash"], records[0].prev_hash);
    assert_eq!(lines[0]["trace_id"], TRACE);
    assert_eq!(lines[0]["kind"], "task.start");
    assert_eq!(lines[0]["detail"]["intent"], "notes");
    assert_eq!(lines[1]["seq"], 2);
    assert_eq!(lines[2]["type"], "checkpoint");
    assert_eq!(lines[2]["seq"], 2);
    assert_eq!(lines[2]["hash"], records[1].hash);
    assert_eq!(lines[2]["created_at"], 1_700_000_000);
    assert_eq!(lines[2]["signature"], "eyJhbGciOiJFUzI1NiJ9.e30.c2ln");
    assert_eq!(lines[3]["seq"], 3);
    let expected = ExportCounts {
        sent: 3,
        dropped: 0,
        failed: 0,
    };
    assert_eq!(exporter.jsonl_counts(), Some(expected));
    let checkpoint_counts = exporter.jsonl_checkpoint_counts();
    assert_eq!(checkpoint_counts.map(|counts| counts.sent), Some(1));
    assert!(exporter.otlp_counts().is_none());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path)
            .expect("the file exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    if let Some(root) = path.parent().and_then(|nested| nested.parent()) {
        let _ = std::fs::remove_dir_all(root);
    }
}

#[tokio::test]
async fn jsonl_appends_to_existing_file() {
    let path = temp_path("export.jsonl");
    let config = ExportConfig {
        jsonl_path: Some(path.clone()),
        ..ExportConfig::default()
    };
    for records in [&task_records()[..1], &task_records()[1..2]] {
        let exporter = start(&config);
        exporter.committed(records);
        exporter.shutdown().await;
    }
    let text = std::fs::read_to_string(&path).expect("the file exists");
    let seqs: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("each line is JSON")["seq"].clone())
        .collect();
    assert_eq!(seqs, vec![json!(1), json!(2)]);
    if let Some(root) = path.parent().and_then(|nested| nested.parent()) {
        let _ = std::fs::remove_dir_all(root);
    }
}

#[tokio::test]
async fn jsonl_does_not_wait_for_slow_otlp() {
    // This endpoint accepts connections and never answers, so each OTLP
    // attempt runs into the 1 s timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = silent.local_addr().expect("local address");
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });
    let path = temp_path("both.jsonl");
    let config = ExportConfig {
        jsonl_path: Some(path.clone()),
        timeout_seconds: 1,
        ..otlp_config(&format!("http://{addr}/v1/traces"))
    };
    let exporter = start(&config);
    exporter.committed(&task_records());
    let jsonl_sent = || exporter.jsonl_counts().map_or(0, |counts| counts.sent);
    wait_until("3 lines written", || jsonl_sent() == 3).await;
    assert_eq!(otlp_counts(&exporter).failed, 0);
    wait_until("3 spans failed", || otlp_counts(&exporter).failed == 3).await;
    exporter.shutdown().await;
    held.abort();
    if let Some(root) = path.parent().and_then(|nested| nested.parent()) {
        let _ = std::fs::remove_dir_all(root);
    }
}

#[test]
fn log_limiter_allows_one_message_per_interval() {
    let limiter = LogLimiter::new();
    assert!(limiter.allow());
    assert!(!limiter.allow());
    assert!(!limiter.allow());
}
