use std::time::Instant;

use serde_json::json;

use super::*;

fn shapes_only() -> Redactor {
    Redactor::new(Vec::new())
}

/// Redacts `text` with the shapes only and returns the output and count.
fn redact(text: &str) -> (String, usize) {
    let (out, count) = shapes_only().redact_str(text);
    (out.into_owned(), count)
}

fn fake_pem(label: &str) -> String {
    format!(
        "-----BEGIN {label}-----\n\
         MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n\
         MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n\
         NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ\n\
         -----END {label}-----"
    )
}

#[test]
fn private_key_blocks_redacted() {
    for label in [
        "PRIVATE KEY",
        "RSA PRIVATE KEY",
        "EC PRIVATE KEY",
        "DSA PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "PGP PRIVATE KEY BLOCK",
    ] {
        let text = format!("key follows:\n{}\ndone", fake_pem(label));
        let (out, count) = redact(&text);
        assert_eq!(out, "key follows:\n[redacted:private_key]\ndone", "{label}");
        assert_eq!(count, 1, "{label}");
    }
}

#[test]
fn private_key_with_pem_headers_redacted() {
    let text = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                DEK-Info: AES-128-CBC,8A2E3F4C5D6E7F8091A2B3C4D5E6F708\n\n\
                MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi1\n\
                -----END RSA PRIVATE KEY-----";
    assert_eq!(redact(text).0, "[redacted:private_key]");
}

#[test]
fn private_key_in_json_string_redacted() {
    let body = json!({ "key": fake_pem("PRIVATE KEY"), "name": "deploy" }).to_string();
    let (out, count) = redact(&body);
    assert_eq!(out, r#"{"key":"[redacted:private_key]","name":"deploy"}"#);
    assert_eq!(count, 1);
}

#[test]
fn private_key_without_end_redacted_to_body_end() {
    let pem = fake_pem("PRIVATE KEY");
    let cut = pem.find("-----END").expect("test PEM has an END line");
    let text = format!("{}(truncated)", &pem[..cut]);
    assert_eq!(redact(&text).0, "[redacted:private_key](truncated)");
}

#[test]
fn public_key_and_certificate_untouched() {
    for label in ["PUBLIC KEY", "CERTIFICATE", "RSA PUBLIC KEY"] {
        let text = fake_pem(label);
        assert_eq!(redact(&text).1, 0, "{label}");
    }
}

#[test]
fn aws_access_key_id_redacted() {
    for id in ["AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A"] {
        let (out, count) = redact(&format!("id={id}, region=eu-west-1"));
        assert_eq!(out, "id=[redacted:aws_access_key_id], region=eu-west-1");
        assert_eq!(count, 1);
    }
}

#[test]
fn aws_access_key_id_near_misses_untouched() {
    for text in [
        // 15 characters after the prefix.
        "AKIAIOSFODNN7EXAMPL",
        // Lowercase.
        "akiaiosfodnn7example",
        // Part of a longer word.
        "XAKIAIOSFODNN7EXAMPLE",
        "AKIAIOSFODNN7EXAMPLEX",
        // Resource ids, not credentials.
        "AROAIOSFODNN7EXAMPLE",
    ] {
        assert_eq!(redact(text).1, 0, "{text}");
    }
}

#[test]
fn aws_secret_access_key_redacted_after_label() {
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    for (text, expected) in [
        (
            format!("aws_secret_access_key = {secret}\n"),
            "aws_secret_access_key = [redacted:aws_secret_access_key]\n",
        ),
        (
            format!("AWS_SECRET_ACCESS_KEY={secret}"),
            "AWS_SECRET_ACCESS_KEY=[redacted:aws_secret_access_key]",
        ),
        (
            format!(r#"{{"SecretAccessKey": "{secret}"}}"#),
            r#"{"SecretAccessKey": "[redacted:aws_secret_access_key]"}"#,
        ),
        (
            format!("<SecretAccessKey>{secret}</SecretAccessKey>"),
            "<SecretAccessKey>[redacted:aws_secret_access_key]</SecretAccessKey>",
        ),
    ] {
        assert_eq!(redact(&text).0, expected);
    }
}

#[test]
fn aws_secret_near_misses_untouched() {
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    for text in [
        // No label: 40 base64 characters alone are too common to remove.
        format!("value {secret} here"),
        // Too long to be a secret access key.
        format!("aws_secret_access_key = {secret}A"),
        // Too short.
        "aws_secret_access_key = wJalrXUtnFEMI".to_owned(),
    ] {
        assert_eq!(redact(&text).1, 0, "{text}");
    }
}

#[test]
fn session_token_redacted_after_label() {
    let token = "IQoJb3JpZ2luX2VjE".repeat(8);
    let text = format!(r#""SessionToken": "{token}""#);
    assert_eq!(
        redact(&text).0,
        r#""SessionToken": "[redacted:session_token]""#
    );
    let short = r#""SessionToken": "abc123""#;
    assert_eq!(redact(short).1, 0);
}

#[test]
fn github_tokens_redacted() {
    let body36 = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8";
    for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        let text = format!("token {prefix}{body36} end");
        assert_eq!(
            redact(&text).0,
            "token [redacted:github_token] end",
            "{prefix}"
        );
    }
    let pat = format!("github_pat_11ABCDEFG0123456789_{}", "x9Y8z7W6".repeat(8));
    assert_eq!(redact(&pat).0, "[redacted:github_token]");
}

#[test]
fn github_near_misses_untouched() {
    for text in [
        "ghp_short1234",
        "ghx_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
        "github_pat_tooshort",
        "aghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    ] {
        assert_eq!(redact(text).1, 0, "{text}");
    }
}

#[test]
fn slack_tokens_and_webhooks_redacted() {
    for token in [
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "xoxp-123456789012-123456789012-123456789012-0123456789abcdef0123456789abcdef",
        "xapp-1-A012345BCDE-1234567890123-0123456789abcdef",
    ] {
        let text = format!("SLACK_TOKEN={token}");
        assert_eq!(
            redact(&text).0,
            "SLACK_TOKEN=[redacted:slack_token]",
            "{token}"
        );
    }
    let hook = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX";
    assert_eq!(redact(hook).0, "[redacted:slack_webhook]");
}

#[test]
fn slack_near_misses_untouched() {
    for text in [
        "xoxo-and-hugs",
        "xoxb-short",
        "https://hooks.slack.com/services/",
    ] {
        assert_eq!(redact(text).1, 0, "{text}");
    }
}

#[test]
fn model_api_keys_redacted() {
    let anthropic = format!("sk-ant-api03-{}AA", "Ab1_Cd2-Ef3".repeat(8));
    let openai_project = format!("sk-proj-{}", "Qw3_Er4-Ty5Ui6".repeat(6));
    let openai_legacy = "sk-Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv1Wx2Yz3Ab4Cd5Ef6";
    assert_eq!(
        redact(&format!("key: {anthropic}")).0,
        "key: [redacted:anthropic_key]"
    );
    assert_eq!(
        redact(&format!("key: {openai_project}")).0,
        "key: [redacted:openai_key]"
    );
    assert_eq!(
        redact(&format!("key: {openai_legacy}")).0,
        "key: [redacted:openai_key]"
    );
}

#[test]
fn model_api_key_near_misses_untouched() {
    for text in [
        "sk-learn is a library",
        "sk-this-is-a-very-long-kebab-case-identifier-name-indeed",
        "task-Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv1Wx2Yz3Ab4Cd5Ef6",
        "sk-ant-short",
    ] {
        assert_eq!(redact(text).1, 0, "{text}");
    }
}

#[test]
fn google_api_key_redacted() {
    let key = "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q";
    assert_eq!(key.len(), 39);
    assert_eq!(
        redact(&format!("?key={key}&q=1")).0,
        "?key=[redacted:google_api_key]&q=1"
    );
    assert_eq!(redact(key).0, "[redacted:google_api_key]");
}

#[test]
fn google_api_key_near_misses_untouched() {
    for text in [
        "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6",
        "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7",
        "aizaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    ] {
        assert_eq!(redact(text).1, 0, "{text}");
    }
}

#[test]
fn bearer_token_redacted() {
    let (out, count) = redact("curl -H 'X: bearer abcDEF123456ghiJKL789_-.~+/=' url");
    assert_eq!(out, "curl -H 'X: bearer [redacted:bearer_token]' url");
    assert_eq!(count, 1);
}

#[test]
fn bearer_prose_untouched() {
    for text in [
        "The bearer of this letter is a friend.",
        "Bearer tokens are described in RFC 6750.",
        "Authorization: Bearer <token>",
    ] {
        assert_eq!(redact(text).1, 0, "{text}");
    }
}

#[test]
fn authorization_values_redacted() {
    for (text, expected) in [
        (
            "Authorization: Basic dXNlcjpwYXNzd29yZA==\r\nHost: x",
            "Authorization: Basic [redacted:authorization]\r\nHost: x",
        ),
        (
            "authorization: Token 0123456789abcdef",
            "authorization: Token [redacted:authorization]",
        ),
        (
            r#"{"Authorization": "ApiKey k3y-v4lue-0123"}"#,
            r#"{"Authorization": "ApiKey [redacted:authorization]"}"#,
        ),
        (
            "Proxy-Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            "Proxy-Authorization: Basic [redacted:authorization]",
        ),
        (
            r#"Authorization: Digest username="alice", realm="x", response="6629fae49393a05397450978507c4ef1""#,
            "Authorization: Digest [redacted:authorization]",
        ),
        (
            "authorization=0123456789abcdefABCDEF",
            "authorization=[redacted:authorization]",
        ),
    ] {
        assert_eq!(redact(text).0, expected, "{text}");
    }
}

#[test]
fn authorization_bearer_redacted_once() {
    let (out, count) = redact("Authorization: Bearer abcDEF123456ghiJKL789");
    assert!(out.starts_with("Authorization: Bearer [redacted:"), "{out}");
    assert!(!out.contains("abcDEF"), "{out}");
    assert_eq!(count, 1);
}

#[test]
fn authorization_prose_untouched() {
    for text in [
        "Authorization: the act of granting access.",
        "Authorization: required for all endpoints",
        "The authorization header is missing.",
    ] {
        assert_eq!(redact(text).1, 0, "{text}");
    }
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                   eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0.\
                   SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

#[test]
fn jwt_redacted() {
    let (out, count) = redact(&format!("token={JWT}; path=/"));
    assert_eq!(out, "token=[redacted:jwt]; path=/");
    assert_eq!(count, 1);
}

#[test]
fn jwt_unsigned_and_jwe_redacted() {
    let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.";
    assert_eq!(redact(unsigned).0, "[redacted:jwt]");
    let jwe = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMTI4R0NNIn0..48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6ji.XFBoMYUZodetZdvTiFvSkQ";
    assert_eq!(redact(jwe).0, "[redacted:jwt]");
}

#[test]
fn jwt_near_misses_untouched() {
    for text in [
        // One part: base64 of a JSON object.
        "eyJhbGciOiJIUzI1NiJ9",
        // Two parts.
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0",
        // First part does not start with eyJ.
        "abJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpM",
    ] {
        assert_eq!(redact(text).1, 0, "{text}");
    }
}

#[test]
fn ordinary_text_untouched() {
    let text = "The quarterly report is attached. Revenue grew by 12% over the previous \
                quarter, driven by the new authorization service and better onboarding. \
                Please review section 3 before Thursday's meeting; the bearer of bad news \
                is, as usual, the finance team. Contact alice@acme.test with questions.\n\
                Request id 123e4567-e89b-12d3-a456-426614174000, trace \
                4bf92f3577b34da6a3ce929d0e0e4736, parent 00f067aa0ba902b7.\n\
                sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
                commit 9fceb02d0ae598e95dc970b74767f19372d61af8\n\
                data: aGVsbG8gd29ybGQ= and eyJhIjoxfQ== and SGVsbG8sIFdhcmRlbiE=\n\
                path /var/lib/warden/tasks/0190c2a4-7d1e-7cc3-9a5b-5f0e2f6d8a11.json";
    let (out, count) = redact(text);
    assert_eq!(count, 0);
    assert_eq!(out, text);
    assert!(matches!(shapes_only().redact_str(text).0, Cow::Borrowed(_)));
}

#[test]
fn exact_values_redacted() {
    let redactor = Redactor::new(vec!["hunter2-but-longer".to_owned()]);
    let (out, count) = redactor.redact_str("pw=hunter2-but-longer and again hunter2-but-longer.");
    assert_eq!(out, "pw=[redacted] and again [redacted].");
    assert_eq!(count, 2);
    assert!(redactor.warnings().is_empty());
}

#[test]
fn exact_value_encodings_redacted() {
    let value = "p@ss\"word/with space+plus";
    let redactor = Redactor::new(vec![value.to_owned()]).with_shapes(false);
    let json_body = json!({ "echo": value }).to_string();
    assert_eq!(
        redactor.redact_str(&json_body).0,
        r#"{"echo":"[redacted]"}"#
    );
    for encoded in [
        "p%40ss%22word%2Fwith%20space%2Bplus",
        "p%40ss%22word%2Fwith+space%2Bplus",
    ] {
        let text = format!("?q={encoded}&x=1");
        assert_eq!(
            redactor.redact_str(&text).0,
            "?q=[redacted]&x=1",
            "{encoded}"
        );
    }
}

#[test]
fn short_values_ignored_with_warning() {
    let redactor = Redactor::new(vec!["short".to_owned(), "long-enough-value".to_owned()]);
    assert_eq!(redactor.warnings().len(), 1);
    assert!(
        redactor.warnings()[0].contains("5 bytes"),
        "{:?}",
        redactor.warnings()
    );
    assert_eq!(
        redactor.redact_str("short and long-enough-value").0,
        "short and [redacted]"
    );
}

#[test]
fn overlapping_values_merged() {
    let redactor = Redactor::new(vec!["abcdefgh12".to_owned(), "gh12345678".to_owned()]);
    let (out, count) = redactor.redact_str("xxabcdefgh12345678yy");
    assert_eq!(out, "xx[redacted]yy");
    assert_eq!(count, 1);
}

#[test]
fn value_overlapping_itself_merged() {
    let redactor = Redactor::new(vec!["aaaaaaaa".to_owned()]);
    let (out, count) = redactor.redact_str("-aaaaaaaaaaa-");
    assert_eq!(out, "-[redacted]-");
    assert_eq!(count, 1);
}

#[test]
fn value_overlapping_shape_merged() {
    // The value starts inside the JWT and runs past its end.
    let tail = &JWT[JWT.len() - 10..];
    let value = format!("{tail}-suffix");
    let redactor = Redactor::new(vec![value]);
    let text = format!("<{JWT}-suffix>");
    let (out, count) = redactor.redact_str(&text);
    assert_eq!(out, "<[redacted:jwt]>");
    assert_eq!(count, 1);
}

#[test]
fn shapes_off_keeps_shapes() {
    let redactor = Redactor::new(vec!["my-injected-key-123".to_owned()]).with_shapes(false);
    let text = "AKIAIOSFODNN7EXAMPLE my-injected-key-123";
    assert_eq!(
        redactor.redact_str(text).0,
        "AKIAIOSFODNN7EXAMPLE [redacted]"
    );
}

#[test]
fn json_values_redacted_keys_kept() {
    let redactor = Redactor::new(vec!["injected-credential-1".to_owned()]);
    let mut value = json!({
        "injected-credential-1": "key stays",
        "headers": { "authorization": "Bearer abcDEF123456ghiJKL789" },
        "list": ["injected-credential-1", 42, true, null, { "id": "AKIAIOSFODNN7EXAMPLE" }],
        "plain": "nothing here",
    });
    let count = redactor.redact_json(&mut value);
    assert_eq!(count, 3);
    assert_eq!(
        value,
        json!({
            "injected-credential-1": "key stays",
            "headers": { "authorization": "Bearer [redacted:bearer_token]" },
            "list": ["[redacted]", 42, true, null, { "id": "[redacted:aws_access_key_id]" }],
            "plain": "nothing here",
        })
    );
}

#[test]
fn bytes_with_invalid_utf8_redacted() {
    let redactor = Redactor::new(vec!["injected-credential-1".to_owned()]);
    let mut input = vec![0xff, 0xfe, b' '];
    input.extend_from_slice(b"injected-credential-1");
    input.extend_from_slice(&[0xc3, b' ', 0x80]);
    input.extend_from_slice(b"AKIAIOSFODNN7EXAMPLE");
    input.push(0xf0);
    let (out, count) = redactor.redact_bytes(&input);
    let mut expected = vec![0xff, 0xfe, b' '];
    expected.extend_from_slice(b"[redacted]");
    expected.extend_from_slice(&[0xc3, b' ', 0x80]);
    expected.extend_from_slice(b"[redacted:aws_access_key_id]");
    expected.push(0xf0);
    assert_eq!(out.as_ref(), expected.as_slice());
    assert_eq!(count, 2);
}

#[test]
fn non_ascii_text_stays_utf8() {
    let redactor = Redactor::new(vec!["clé-secrète-ü".to_owned()]);
    let (out, count) =
        redactor.redact_str("début clé-secrète-ü fin — Authorization: Basic dXNlcjpwYXNz");
    assert_eq!(
        out,
        "début [redacted] fin — Authorization: Basic [redacted:authorization]"
    );
    assert_eq!(count, 2);
}

#[test]
fn empty_text_untouched() {
    let (out, count) = Redactor::new(vec!["injected-credential-1".to_owned()]).redact_str("");
    assert_eq!(out, "");
    assert_eq!(count, 0);
}

#[test]
fn shapes_compile() {
    assert!(SHAPES.is_some());
}

/// Measures one pass over 1 MiB without secrets. Run with
/// `cargo test --release -p warden-gateway redact::tests::megabyte -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a check"]
fn megabyte_without_secrets_timing() {
    let redactor = Redactor::new(vec!["injected-credential-1".to_owned()]);
    let line = "{\"id\": \"123e4567-e89b-12d3-a456-426614174000\", \"text\": \"The quarterly \
                report is attached; the authorization service grew. Bearer of news.\", \
                \"sha\": \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"}\n";
    let body = line.repeat(1024 * 1024 / line.len() + 1);
    let _ = redactor.redact_str(&body);
    let rounds = 20;
    let started = Instant::now();
    for _ in 0..rounds {
        let (_, count) = redactor.redact_str(&body);
        assert_eq!(count, 0);
    }
    let per_pass = started.elapsed() / rounds;
    println!("{} bytes: {per_pass:?} per pass", body.len());
}
