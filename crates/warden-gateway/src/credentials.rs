//! Credentials that Warden injects into upstream requests.
//!
//! A secret is read from its environment variable or file each time it is
//! used, so a rotated secret takes effect on the next request without a
//! restart, and it is never written to the config, a log or a record. A
//! `txn_token` credential holds no secret at all: Warden mints a short-lived
//! JWT per task and signs it with a key published at
//! `/.well-known/jwks.json`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use base64::Engine as _;
use serde_json::{Value, json};
use warden_config::{CredentialConfig, CredentialKind};
use warden_identity::{SigningKey, TaskClaims};

/// Default lifetime of a transaction token, in seconds.
const DEFAULT_TXN_TTL_SECONDS: u64 = 300;
/// Header that carries a transaction token unless the config names another.
pub const TXN_TOKEN_HEADER: &str = "txn-token";
/// `typ` of transaction tokens, as the IETF Transaction Tokens draft names it.
const TXN_TOKEN_TYPE: &str = "txntoken+jwt";
/// Minted tokens kept for reuse before the cache is emptied.
const MAX_CACHED_TOKENS: usize = 10_000;
/// A cached token is reused only while it has this many seconds left.
const MIN_REMAINING_SECONDS: i64 = 30;

/// The source a secret is read from.
#[derive(Clone, Debug)]
pub enum SecretSource {
    /// An environment variable of Warden's process.
    Env(String),
    /// A file, read on each use.
    File(PathBuf),
}

impl SecretSource {
    /// Returns the source a config names: the variable when both are set
    /// (the config check rejects that), the file otherwise, or `None`.
    pub fn from_config(env: &Option<String>, file: &Option<PathBuf>) -> Option<SecretSource> {
        match (env, file) {
            (Some(name), _) => Some(SecretSource::Env(name.clone())),
            (None, Some(path)) => Some(SecretSource::File(path.clone())),
            (None, None) => None,
        }
    }

    /// Reads the secret now; fails with a message that names the source,
    /// never the value.
    pub fn read(&self) -> Result<String, String> {
        let (value, source) = match self {
            SecretSource::Env(name) => (
                std::env::var(name).unwrap_or_default(),
                format!("environment variable {name}"),
            ),
            SecretSource::File(path) => (
                std::fs::read_to_string(path).unwrap_or_default(),
                format!("file {}", path.display()),
            ),
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(format!(
                "the secret in {source} is unset, unreadable or empty"
            ));
        }
        Ok(value.to_owned())
    }
}

/// One configured credential, ready to apply.
#[derive(Clone, Debug)]
pub struct Credential {
    kind: CredentialKind,
    secret: Option<SecretSource>,
    header: Option<HeaderName>,
    username: Option<String>,
    env: Option<String>,
    audience: String,
    ttl_seconds: u64,
}

/// The headers a credential adds to one request.
pub struct Injected {
    /// Headers to send only to the upstream's own origin.
    pub headers: HeaderMap,
    /// Secret values sent, to be removed from anything the agent or the
    /// audit log sees.
    pub secrets: Vec<String>,
}

impl Credential {
    /// Builds a credential from its (already checked) config;
    /// `default_audience` is the upstream's origin.
    pub fn new(config: &CredentialConfig, default_audience: &str) -> anyhow::Result<Credential> {
        let secret = SecretSource::from_config(&config.secret_env, &config.secret_file);
        let header = config
            .header
            .as_deref()
            .map(|name| HeaderName::try_from(name.to_ascii_lowercase()))
            .transpose()
            .map_err(|_| anyhow::anyhow!("invalid credential header name"))?;
        Ok(Credential {
            kind: config.kind,
            secret,
            header,
            username: config.username.clone(),
            env: config.env.clone(),
            audience: config
                .audience
                .clone()
                .unwrap_or_else(|| default_audience.to_owned()),
            ttl_seconds: config.ttl_seconds.unwrap_or(DEFAULT_TXN_TTL_SECONDS),
        })
    }

    /// Returns the credential's kind.
    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// Returns the `(variable, secret)` pair of an `env` credential.
    pub fn env_pair(&self) -> Option<Result<(String, String), String>> {
        if self.kind != CredentialKind::Env {
            return None;
        }
        let name = self.env.clone()?;
        let secret = self.secret.as_ref()?;
        Some(secret.read().map(|value| (name, value)))
    }

    /// Returns true for a credential that depends on the task.
    pub fn per_task(&self) -> bool {
        self.kind == CredentialKind::TxnToken
    }

    /// Builds the headers of a credential that does not depend on the
    /// task (bearer, header, basic); empty for the others.
    pub fn static_headers(&self) -> Result<Injected, String> {
        if matches!(self.kind, CredentialKind::TxnToken | CredentialKind::Env) {
            return Ok(Injected {
                headers: HeaderMap::new(),
                secrets: Vec::new(),
            });
        }
        self.build(|| Err("a transaction token needs a task".to_owned()))
    }

    /// Builds the headers for one request of the task of `claims`.
    pub fn inject(
        &self,
        claims: &TaskClaims,
        minter: &TxnTokens,
        now: i64,
    ) -> Result<Injected, String> {
        self.build(|| minter.mint(claims, &self.audience, self.ttl_seconds, now))
    }

    /// Builds the credential's header; `txn_token` supplies a transaction
    /// token when the kind needs one.
    fn build(
        &self,
        txn_token: impl FnOnce() -> Result<String, String>,
    ) -> Result<Injected, String> {
        let mut headers = HeaderMap::new();
        let mut secrets = Vec::new();
        let mut read = || -> Result<String, String> {
            let secret = self
                .secret
                .as_ref()
                .ok_or("the credential has no secret source")?
                .read()?;
            secrets.push(secret.clone());
            Ok(secret)
        };
        let (name, value) = match self.kind {
            CredentialKind::Bearer => (header::AUTHORIZATION, format!("Bearer {}", read()?)),
            CredentialKind::Header => (
                self.header
                    .clone()
                    .ok_or("the credential names no header")?,
                read()?,
            ),
            CredentialKind::Basic => {
                let user = self.username.as_deref().unwrap_or_default();
                let pair = format!("{user}:{}", read()?);
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                secrets.push(encoded.clone());
                (header::AUTHORIZATION, format!("Basic {encoded}"))
            }
            CredentialKind::TxnToken => {
                let token = txn_token()?;
                secrets.push(token.clone());
                (
                    self.header
                        .clone()
                        .unwrap_or(HeaderName::from_static(TXN_TOKEN_HEADER)),
                    token,
                )
            }
            CredentialKind::Env => return Ok(Injected { headers, secrets }),
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| "the secret is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        headers.insert(name, value);
        Ok(Injected { headers, secrets })
    }
}

/// Mints transaction tokens: short-lived JWTs that tell an upstream which
/// task, agent and user a request serves, following the IETF OAuth
/// Transaction Tokens draft (`Txn-Token` header, `typ` `txntoken+jwt`).
pub struct TxnTokens {
    key: SigningKey,
    issuer: String,
    cache: Mutex<HashMap<(String, String), (String, i64)>>,
}

impl TxnTokens {
    /// Creates a minter that signs with `key` as `issuer`.
    pub fn new(key: SigningKey, issuer: String) -> TxnTokens {
        TxnTokens {
            key,
            issuer,
            cache: Mutex::default(),
        }
    }

    /// Returns the JWK set that upstreams verify tokens with.
    pub fn jwks(&self) -> Value {
        let mut jwk = self.key.public_jwk(Some("sig"));
        jwk["alg"] = json!("ES256");
        json!({ "keys": [jwk] })
    }

    /// Returns a token for the task of `claims` and `audience`, valid for
    /// at most `ttl_seconds` and never beyond the task's expiry. A token
    /// minted earlier is reused while it has time left.
    pub fn mint(
        &self,
        claims: &TaskClaims,
        audience: &str,
        ttl_seconds: u64,
        now: i64,
    ) -> Result<String, String> {
        let key = (claims.task_id.clone(), audience.to_owned());
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, expires)) = cache.get(&key)
            && expires - now >= MIN_REMAINING_SECONDS
        {
            return Ok(token.clone());
        }
        let ttl = i64::try_from(ttl_seconds).unwrap_or(i64::MAX);
        let expires = now.saturating_add(ttl).min(claims.exp);
        if expires <= now {
            return Err(format!("task {} has expired", claims.task_id));
        }
        let agent = crate::delegation::acting_agent(claims);
        let mut body = json!({
            "iss": self.issuer,
            "aud": audience,
            "iat": now,
            "exp": expires,
            "jti": uuid::Uuid::new_v4().to_string(),
            "txn": claims.task_id,
            "sub": claims.user,
            "scope": claims.tools.join(" "),
            "task_id": claims.task_id,
            "agent": agent,
            "user": claims.user,
            "tctx": {
                "task_id": claims.task_id,
                "root_task_id": claims.root_task(),
                "trace_id": claims.trace_id,
                "intent": claims.intent,
            },
            "rctx": { "req_wl": agent },
        });
        if let Some(act) = &claims.act {
            body["act"] = act.clone();
        }
        let token = self
            .key
            .sign_jws(TXN_TOKEN_TYPE, body.to_string().as_bytes())
            .map_err(|error| format!("cannot sign a transaction token: {error}"))?;
        if cache.len() >= MAX_CACHED_TOKENS {
            cache.clear();
        }
        cache.insert(key, (token.clone(), expires));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> TaskClaims {
        TaskClaims {
            iss: "warden".into(),
            aud: "warden".into(),
            sub: "spiffe://acme.test/agent/bot".into(),
            jti: "j".into(),
            task_id: "task-1".into(),
            user: "alice".into(),
            intent: "test".into(),
            tools: vec!["files__*".into()],
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            iat: 0,
            exp,
            act: None,
            parent_task_id: None,
            root_task_id: None,
        }
    }

    fn payload(token: &str) -> Value {
        let segment = token.split('.').nth(1).expect("payload segment");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON payload")
    }

    #[test]
    fn mint_binds_task_agent_user_and_audience() {
        let minter = TxnTokens::new(SigningKey::generate().expect("key"), "warden".into());
        let token = minter
            .mint(&claims(2_000), "https://api.test", 300, 1_000)
            .expect("mint");
        let body = payload(&token);
        assert_eq!(body["aud"], "https://api.test");
        assert_eq!(body["txn"], "task-1");
        assert_eq!(body["sub"], "alice");
        assert_eq!(body["agent"], "spiffe://acme.test/agent/bot");
        assert_eq!(body["exp"], 1_300);
    }

    #[test]
    fn mint_never_outlives_the_task() {
        let minter = TxnTokens::new(SigningKey::generate().expect("key"), "warden".into());
        let token = minter
            .mint(&claims(1_100), "aud", 300, 1_000)
            .expect("mint");
        assert_eq!(payload(&token)["exp"], 1_100);
        assert!(minter.mint(&claims(1_000), "other", 300, 1_000).is_err());
    }

    #[test]
    fn mint_reuses_a_fresh_token_per_audience() {
        let minter = TxnTokens::new(SigningKey::generate().expect("key"), "warden".into());
        let first = minter.mint(&claims(5_000), "a", 300, 1_000).expect("mint");
        assert_eq!(
            minter.mint(&claims(5_000), "a", 300, 1_100).expect("mint"),
            first
        );
        assert_ne!(
            minter.mint(&claims(5_000), "b", 300, 1_100).expect("mint"),
            first
        );
        assert_ne!(
            minter.mint(&claims(5_000), "a", 300, 1_280).expect("mint"),
            first
        );
    }

    #[test]
    fn secret_source_reads_fresh_values() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "first\n").expect("write");
        let source = SecretSource::File(path.clone());
        assert_eq!(source.read().as_deref(), Ok("first"));
        std::fs::write(&path, "second").expect("write");
        assert_eq!(source.read().as_deref(), Ok("second"));

        let missing = SecretSource::Env("WARDEN_TEST_SURELY_UNSET_VARIABLE".into());
        let error = missing.read().expect_err("unset");
        assert!(
            error.contains("WARDEN_TEST_SURELY_UNSET_VARIABLE"),
            "{error}"
        );
    }

    #[test]
    fn inject_basic_encodes_user_and_secret() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cr3t-value").expect("write");
        let config = CredentialConfig {
            kind: CredentialKind::Basic,
            secret_file: Some(path),
            username: Some("svc".into()),
            ..CredentialConfig::default()
        };
        let credential = Credential::new(&config, "http://x").expect("credential");
        let minter = TxnTokens::new(SigningKey::generate().expect("key"), "warden".into());
        let injected = credential
            .inject(&claims(5_000), &minter, 1_000)
            .expect("inject");
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("svc:s3cr3t-value")
        );
        assert_eq!(injected.headers[header::AUTHORIZATION], expected.as_str());
        assert!(injected.secrets.contains(&"s3cr3t-value".to_owned()));
    }
}
