//! Hostile JWT-SVIDs and misused task tokens against a real
//! `warden serve`: `alg: none`, algorithm confusion, wrongly typed time
//! claims, leeway, foreign trust domains and audiences, and tokens shown
//! to the wrong endpoint.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::{AGENT, DevKey, Setup, Warden, now_unix, sign_hs256, signing_input};

fn task_body() -> Value {
    json!({ "intent": "integration test", "user": "alice@acme.test" })
}

/// Returns the status of `POST /v1/tasks` with `svid`.
async fn start_status(warden: &Warden, svid: &str) -> u16 {
    warden.post_task(svid, &task_body()).await.status().as_u16()
}

/// Returns valid SVID claims with `changes` merged in; a `null` value
/// removes the claim.
fn claims_with(changes: Value) -> Value {
    let mut claims = DevKey::svid_claims();
    for (key, value) in changes.as_object().expect("changes are an object") {
        if value.is_null() {
            claims.as_object_mut().expect("claims").remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

#[tokio::test]
async fn identity_issued_svid_starts_task() {
    let warden = Warden::start(Setup::permissive()).await;

    let status = start_status(&warden, &warden.issue_svid()).await;

    assert_eq!(status, 201);
}

#[tokio::test]
async fn identity_self_signed_svid_starts_task() {
    let warden = Warden::start(Setup::permissive()).await;
    let key = warden.dev_key();

    let status = start_status(&warden, &key.sign(&DevKey::svid_claims())).await;

    assert_eq!(
        status, 201,
        "the test's signing does not match the issuer's"
    );
}

#[tokio::test]
async fn identity_alg_none_is_rejected_401() {
    let warden = Warden::start(Setup::permissive()).await;
    let key = warden.dev_key();
    let claims = DevKey::svid_claims();
    let headers = [
        json!({ "alg": "none", "typ": "JWT" }),
        json!({ "alg": "None", "typ": "JWT" }),
        json!({ "alg": "NONE", "typ": "JWT", "kid": key.kid }),
        json!({ "typ": "JWT", "kid": key.kid }),
    ];
    for header in headers {
        let input = signing_input(&header, &claims);
        for token in [format!("{input}."), input.clone()] {
            let status = start_status(&warden, &token).await;
            assert_eq!(status, 401, "header {header}, token {token}");
        }
    }
    // A real ES256 signature under an `alg: none` header.
    let signed = key.sign_with_header(&json!({ "alg": "none", "kid": key.kid }), &claims);
    assert_eq!(start_status(&warden, &signed).await, 401);
}

#[tokio::test]
async fn identity_hs256_with_public_key_is_rejected_401() {
    let warden = Warden::start(Setup::permissive()).await;
    let key = warden.dev_key();
    let claims = DevKey::svid_claims();
    let bundle = warden.files.run(&["identity", "bundle"]);
    assert!(bundle.status.success(), "warden identity bundle failed");
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("uncompressed point", key.public_point.clone()),
        ("public JWK", key.public_jwk.to_string().into_bytes()),
        ("bundle output", bundle.stdout.clone()),
        (
            "x coordinate",
            key.public_jwk["x"].as_str().expect("x").as_bytes().to_vec(),
        ),
        ("kid", key.kid.as_bytes().to_vec()),
    ];
    for alg in ["HS256", "HS384", "HS512"] {
        for (what, secret) in &secrets {
            let header = json!({ "alg": alg, "typ": "JWT", "kid": key.kid });
            let token = sign_hs256(&header, &claims, secret);
            let status = start_status(&warden, &token).await;
            assert_eq!(status, 401, "{alg} keyed with the {what}");
        }
    }
}

#[tokio::test]
async fn identity_embedded_attacker_key_is_rejected_401() {
    let warden = Warden::start(Setup::permissive()).await;
    let trusted = warden.dev_key();
    let attacker = DevKey::generate();
    let claims = DevKey::svid_claims();
    let headers = [
        json!({ "alg": "ES256", "kid": attacker.kid, "jwk": attacker.public_jwk }),
        json!({ "alg": "ES256", "kid": trusted.kid, "jwk": attacker.public_jwk }),
        json!({ "alg": "ES256", "jwk": attacker.public_jwk }),
        json!({ "alg": "ES256", "jku": "http://127.0.0.1:1/jwks.json" }),
        json!({ "alg": "ES256", "kid": trusted.kid, "x5u": "http://127.0.0.1:1/cert.pem" }),
    ];
    for header in headers {
        let token = attacker.sign_with_header(&header, &claims);
        let status = start_status(&warden, &token).await;
        assert_eq!(status, 401, "header {header}");
    }
}

#[tokio::test]
async fn identity_wrongly_typed_time_claims_are_rejected_401() {
    let warden = Warden::start(Setup::permissive()).await;
    let key = warden.dev_key();
    let now = now_unix();
    let cases = [
        json!({ "exp": "never" }),
        json!({ "exp": (now + 300).to_string() }),
        json!({ "exp": null }),
        json!({ "exp": true }),
        json!({ "exp": [now + 300] }),
        json!({ "nbf": "99999999999" }),
        json!({ "nbf": 99_999_999_999_i64 }),
        json!({ "iat": "now" }),
    ];
    for changes in cases {
        let token = key.sign(&claims_with(changes.clone()));
        let status = start_status(&warden, &token).await;
        assert_eq!(status, 401, "claims changed by {changes}");
    }
}

#[tokio::test]
async fn identity_expired_svid_without_leeway_is_rejected_401() {
    let mut setup = Setup::permissive();
    setup.identity.push("leeway_seconds = 0".to_owned());
    let warden = Warden::start(setup).await;
    let key = warden.dev_key();

    let token = key.sign(&claims_with(json!({ "exp": now_unix() - 30 })));

    assert_eq!(start_status(&warden, &token).await, 401);
}

#[tokio::test]
async fn identity_default_leeway_accepts_recent_expiry() {
    let warden = Warden::start(Setup::permissive()).await;
    let key = warden.dev_key();

    let recent = key.sign(&claims_with(json!({ "exp": now_unix() - 10 })));
    let old = key.sign(&claims_with(json!({ "exp": now_unix() - 45 })));

    assert_eq!(start_status(&warden, &recent).await, 201);
    assert_eq!(start_status(&warden, &old).await, 401);
}

#[tokio::test]
async fn identity_ended_task_token_is_rejected_401() {
    let warden = Warden::start(Setup::permissive()).await;
    let task = warden.task().await;
    let session = warden.session(&task).await;

    assert_eq!(warden.end_task(&task).await, 200);
    let response = session
        .post()
        .body(json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }).to_string())
        .send()
        .await
        .expect("POST /mcp");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("error body is JSON");

    assert_eq!(status, 401, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("start a new task"), "message {message:?}");
}

#[tokio::test]
async fn identity_ended_task_token_cannot_open_session() {
    let warden = Warden::start(Setup::permissive()).await;
    let task = warden.task().await;

    assert_eq!(warden.end_task(&task).await, 200);
    let response = warden
        .http
        .post(format!("{}/mcp", warden.base))
        .bearer_auth(&task.token)
        .json(&json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                        "clientInfo": { "name": "t", "version": "1" } }
        }))
        .send()
        .await
        .expect("POST /mcp");

    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn identity_foreign_trust_domain_is_rejected_401() {
    let warden = Warden::start(Setup::permissive()).await;
    let key = warden.dev_key();
    let subjects = [
        "spiffe://b.test/agent/x",
        "spiffe://warden.local.b.test/agent/x",
        "spiffe://WARDEN.LOCAL/agent/x",
        "spiffe://warden.local:443/agent/x",
        "spiffe://warden.local",
        "https://warden.local/agent/x",
    ];
    for subject in subjects {
        let token = key.sign(&claims_with(json!({ "sub": subject })));
        let status = start_status(&warden, &token).await;
        assert_eq!(status, 401, "sub {subject}");
    }
}

#[tokio::test]
async fn identity_missing_audience_is_rejected_401() {
    let warden = Warden::start(Setup::permissive()).await;
    let key = warden.dev_key();
    let cases = [
        json!({ "aud": null }),
        json!({ "aud": [] }),
        json!({ "aud": "" }),
        json!({ "aud": 1 }),
    ];
    for changes in cases {
        let token = key.sign(&claims_with(changes.clone()));
        let status = start_status(&warden, &token).await;
        assert_eq!(status, 401, "claims changed by {changes}");
    }
}

#[tokio::test]
async fn identity_string_audience_is_accepted() {
    let warden = Warden::start(Setup::permissive()).await;
    let key = warden.dev_key();

    let token = key.sign(&claims_with(json!({ "aud": "warden" })));

    assert_eq!(start_status(&warden, &token).await, 201);
}

#[tokio::test]
async fn identity_foreign_audience_is_rejected_401() {
    let warden = Warden::start(Setup::permissive()).await;
    let key = warden.dev_key();
    let audiences = [
        json!("billing-api"),
        json!(["billing-api"]),
        json!("wardenx"),
        json!("Warden"),
        json!(["warden-api", "billing-api"]),
        json!("warden billing-api"),
    ];
    for audience in audiences {
        let token = key.sign(&claims_with(json!({ "aud": audience })));
        let status = start_status(&warden, &token).await;
        assert_eq!(status, 401, "aud {audience}");
    }
}

#[tokio::test]
async fn identity_issued_foreign_audience_is_rejected_401() {
    let warden = Warden::start(Setup::permissive()).await;

    let svid = warden.issue_svid_for(AGENT, &["--audience", "billing-api"]);

    assert_eq!(start_status(&warden, &svid).await, 401);
}

#[tokio::test]
async fn identity_missing_authorization_is_rejected_401() {
    let warden = Warden::start(Setup::permissive()).await;
    let requests = [
        warden
            .http
            .post(format!("{}/v1/tasks", warden.base))
            .json(&task_body()),
        warden
            .http
            .post(format!("{}/mcp", warden.base))
            .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" })),
    ];
    for request in requests {
        let response = request.send().await.expect("send request");
        let url = response.url().to_string();
        assert_eq!(response.status().as_u16(), 401, "{url}");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer"),
            "{url}: WWW-Authenticate {challenge:?}"
        );
    }
}

#[tokio::test]
async fn identity_basic_authorization_is_rejected_401() {
    let warden = Warden::start(Setup::permissive()).await;
    let svid = warden.issue_svid();
    let values = [
        "Basic xxx".to_owned(),
        format!("Basic {}", URL_SAFE_NO_PAD.encode(format!("agent:{svid}"))),
        format!("Token {svid}"),
        format!("Bearer {svid} extra"),
        "Bearer ".to_owned(),
        format!("Bearer{svid}"),
    ];
    for value in values {
        let response = warden
            .http
            .post(format!("{}/v1/tasks", warden.base))
            .header("authorization", &value)
            .json(&task_body())
            .send()
            .await
            .expect("POST /v1/tasks");
        assert_eq!(response.status().as_u16(), 401, "Authorization {value}");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "Authorization {value}"
        );
    }
}

#[tokio::test]
async fn identity_svid_on_mcp_is_rejected_401() {
    let warden = Warden::start(Setup::permissive()).await;
    let svid = warden.issue_svid();

    let response = warden
        .http
        .post(format!("{}/mcp", warden.base))
        .bearer_auth(&svid)
        .json(&json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                        "clientInfo": { "name": "t", "version": "1" } }
        }))
        .send()
        .await
        .expect("POST /mcp");

    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn identity_task_token_starts_no_task() {
    let warden = Warden::start(Setup::permissive()).await;
    let task = warden.task().await;

    let status = start_status(&warden, &task.token).await;

    assert_eq!(status, 401);
}

#[tokio::test]
async fn identity_check_config_requires_trust_domain() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("warden.toml");
    std::fs::write(&config, "[identity]\ndev_issuer = false\n").expect("write config");

    let output = support::warden_command(&["check-config"])
        .arg(&config)
        .output()
        .expect("run warden check-config");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success(), "check-config accepted it: {text}");
    assert!(text.contains("trust_domain"), "{text}");
    assert!(text.contains("identity.dev_issuer"), "{text}");
}

#[tokio::test]
async fn identity_serve_requires_trust_domain() {
    let mut setup = Setup::permissive();
    setup.identity.push("dev_issuer = false".to_owned());
    let files = support::ConfigDir::write(&setup, 0);

    let output = files.serve_expecting_exit();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("trust_domain"), "{stderr}");
}

/// Decodes the claims of a compact JWS without verifying it.
fn token_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a compact JWS");
    let bytes = URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

#[tokio::test]
async fn identity_forged_task_token_is_rejected() {
    let warden = Warden::start(Setup::permissive()).await;
    let task = warden.task().await;
    let svid_key = warden.dev_key();
    let task_key = DevKey::load(&warden.files.dir.path().join("data/keys/task-tokens.pk8"));
    let claims = token_claims(&task.token);
    let forged = [
        svid_key.sign(&claims),
        svid_key.sign_with_header(
            &json!({ "alg": "ES256", "typ": "JWT", "kid": task_key.kid }),
            &claims,
        ),
    ];
    let genuine = task_key.sign(&claims);

    let session = warden.session(&task).await;
    for token in forged {
        let (status, reply) = session
            .with_token(token)
            .request(json!(1), "tools/list", json!({}))
            .await;
        assert_eq!(status, 401, "{reply}");
    }
    let (status, reply) = session
        .with_token(genuine)
        .request(json!(1), "tools/list", json!({}))
        .await;
    assert_eq!(
        status, 200,
        "the test's task token signing is wrong: {reply}"
    );
}

#[tokio::test]
async fn identity_unknown_task_id_is_rejected() {
    let warden = Warden::start(Setup::permissive()).await;
    let task = warden.task().await;
    let task_key = DevKey::load(&warden.files.dir.path().join("data/keys/task-tokens.pk8"));
    let mut claims = token_claims(&task.token);
    claims["task_id"] = json!("00000000-0000-4000-8000-000000000000");

    let response = warden
        .http
        .post(format!("{}/mcp", warden.base))
        .bearer_auth(task_key.sign(&claims))
        .json(&json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                        "clientInfo": { "name": "t", "version": "1" } }
        }))
        .send()
        .await
        .expect("POST /mcp");

    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn identity_expired_task_token_is_rejected_401() {
    let mut setup = Setup::permissive();
    setup.identity.push("leeway_seconds = 0".to_owned());
    let warden = Warden::start(setup).await;
    let task = warden
        .task_with(
            json!({ "intent": "integration test", "user": "alice@acme.test", "ttl_seconds": 1 }),
        )
        .await;
    let session = warden.session(&task).await;

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, reply) = session.request(json!(1), "tools/list", json!({})).await;

    assert_eq!(status, 401, "{reply}");
}

#[tokio::test]
async fn identity_other_agent_cannot_end_task() {
    let warden = Warden::start(Setup::permissive()).await;
    let task = warden.task().await;
    let other = warden.issue_svid_for("spiffe://warden.local/agent/other-bot", &[]);

    let response = warden
        .http
        .delete(format!("{}/v1/tasks/{}", warden.base, task.id))
        .bearer_auth(&other)
        .send()
        .await
        .expect("DELETE /v1/tasks");
    let session = warden.session(&task).await;
    let after = session
        .call_tool("testkit__echo", json!({ "text": "alive" }))
        .await;

    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(support::result_text(&after), "alive", "{after}");
}

#[tokio::test]
async fn identity_duplicate_claim_keys_are_rejected_401() {
    let warden = Warden::start(Setup::permissive()).await;
    let key = warden.dev_key();
    let now = now_unix();
    let header = json!({ "alg": "ES256", "typ": "JWT", "kid": key.kid }).to_string();
    let payloads = [
        format!(
            r#"{{"sub":"{AGENT}","aud":"billing-api","aud":"warden","exp":{}}}"#,
            now + 300
        ),
        format!(
            r#"{{"sub":"spiffe://b.test/agent/x","sub":"{AGENT}","aud":"warden","exp":{}}}"#,
            now + 300
        ),
        format!(
            r#"{{"sub":"{AGENT}","aud":"warden","exp":{},"exp":{}}}"#,
            now - 3600,
            now + 300
        ),
    ];
    for payload in payloads {
        let token = key.sign_raw(&header, &payload);
        let status = start_status(&warden, &token).await;
        assert_eq!(status, 401, "payload {payload}");
    }
    let duplicate_header = format!(r#"{{"alg":"none","alg":"ES256","kid":"{}"}}"#, key.kid);
    let payload = DevKey::svid_claims().to_string();
    let token = key.sign_raw(&duplicate_header, &payload);
    assert_eq!(
        start_status(&warden, &token).await,
        401,
        "header {duplicate_header}"
    );
}

#[tokio::test]
async fn identity_unknown_critical_header_is_rejected_401() {
    let warden = Warden::start(Setup::permissive()).await;
    let key = warden.dev_key();
    let header = json!({
        "alg": "ES256", "typ": "JWT", "kid": key.kid,
        "crit": ["example.test/must-understand"],
        "example.test/must-understand": true
    });

    let token = key.sign_with_header(&header, &DevKey::svid_claims());

    assert_eq!(start_status(&warden, &token).await, 401);
}
