//! Semantic checks of a parsed configuration.
//!
//! Each [`Problem`] names the key, shows the bad value and says what to
//! write instead, so `warden check-config` can print it as it is.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use crate::{Config, Transport};

/// One invalid setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key of the setting, e.g. `upstreams.fs.url`.
    pub key: String,
    /// The problem and its fix.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Maximum clock leeway, in seconds.
pub const MAX_LEEWAY_SECONDS: u64 = 60;

pub(crate) fn check(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut report = |key: &str, message: String| {
        problems.push(Problem {
            key: key.to_owned(),
            message,
        })
    };

    if config.server.listen.parse::<SocketAddr>().is_err() {
        report(
            "server.listen",
            format!(
                "{:?} is not an IP:PORT address; write e.g. \"127.0.0.1:8787\"",
                config.server.listen
            ),
        );
    }
    if let Some(threads) = config.server.worker_threads
        && !(1..=256).contains(&threads)
    {
        report(
            "server.worker_threads",
            format!("{threads} is not between 1 and 256; remove the key to use one thread per CPU"),
        );
    }
    for origin in &config.server.allowed_origins {
        match url::Url::parse(origin) {
            Ok(parsed) if parsed.path() == "/" && parsed.host().is_some() => {}
            _ => report(
                "server.allowed_origins",
                format!(
                    "{origin:?} is not an origin; write scheme://host[:port] with no path, e.g. \"http://localhost:3000\""
                ),
            ),
        }
    }

    if config.identity.audience.trim().is_empty() {
        report(
            "identity.audience",
            "is empty; set the audience your SPIRE agents put in JWT-SVIDs, e.g. \"warden\"".into(),
        );
    }
    if config.identity.leeway_seconds > MAX_LEEWAY_SECONDS {
        report(
            "identity.leeway_seconds",
            format!(
                "{} is more than the maximum of {MAX_LEEWAY_SECONDS} seconds; a large leeway keeps expired tokens usable",
                config.identity.leeway_seconds
            ),
        );
    }
    if !config.identity.dev_issuer && config.trust_domains.is_empty() {
        report(
            "trust_domain",
            "no trust domain is configured and identity.dev_issuer is false, so no agent could authenticate; add a [[trust_domain]] with name and bundle, or set identity.dev_issuer = true".into(),
        );
    }
    if !is_trust_domain(&config.identity.dev_trust_domain) {
        report(
            "identity.dev_trust_domain",
            format!(
                "{:?} is not a valid SPIFFE trust domain; use lowercase letters, digits, '.', '-' and '_'",
                config.identity.dev_trust_domain
            ),
        );
    }
    let mut seen_domains = std::collections::BTreeSet::new();
    for (index, domain) in config.trust_domains.iter().enumerate() {
        let key = format!("trust_domain[{index}]");
        if !is_trust_domain(&domain.name) {
            report(
                &format!("{key}.name"),
                format!(
                    "{:?} is not a valid SPIFFE trust domain; use lowercase letters, digits, '.', '-' and '_' (no scheme, no port)",
                    domain.name
                ),
            );
        }
        if !seen_domains.insert(domain.name.as_str()) {
            report(
                &format!("{key}.name"),
                format!(
                    "trust domain {:?} is listed twice; keep one entry",
                    domain.name
                ),
            );
        }
        if config.identity.dev_issuer && domain.name == config.identity.dev_trust_domain {
            report(
                &format!("{key}.name"),
                format!(
                    "{:?} is also the development issuer's trust domain; set identity.dev_issuer = false or choose another identity.dev_trust_domain",
                    domain.name
                ),
            );
        }
        if !domain.bundle.is_file() {
            report(
                &format!("{key}.bundle"),
                format!(
                    "bundle file {} does not exist; point it at the trust domain's SPIFFE bundle (JWK set in JSON)",
                    domain.bundle.display()
                ),
            );
        }
    }

    if config.tasks.max_ttl_seconds == 0 {
        report(
            "tasks.max_ttl_seconds",
            "is 0; set the longest task lifetime in seconds, e.g. 900".into(),
        );
    }
    if config.tasks.default_ttl_seconds == 0
        || config.tasks.default_ttl_seconds > config.tasks.max_ttl_seconds
    {
        report(
            "tasks.default_ttl_seconds",
            format!(
                "{} must be between 1 and tasks.max_ttl_seconds ({})",
                config.tasks.default_ttl_seconds, config.tasks.max_ttl_seconds
            ),
        );
    }

    if let Some(dir) = &config.policy.dir
        && !dir.is_dir()
    {
        report(
            "policy.dir",
            format!(
                "directory {} does not exist; create it with .cedar files{}",
                dir.display(),
                if config.upstreams.is_empty() {
                    " or remove the key to use the bundled pack"
                } else {
                    ""
                }
            ),
        );
    }

    if config.limits.max_body_bytes < 1024 {
        report(
            "limits.max_body_bytes",
            format!(
                "{} bytes is too small for an MCP message; use at least 1024",
                config.limits.max_body_bytes
            ),
        );
    }
    if config.limits.max_upstream_message_bytes < 1024 {
        report(
            "limits.max_upstream_message_bytes",
            format!(
                "{} bytes is too small for an MCP message; use at least 1024",
                config.limits.max_upstream_message_bytes
            ),
        );
    }
    if config.limits.call_timeout_seconds == 0 {
        report(
            "limits.call_timeout_seconds",
            "is 0; set how many seconds an upstream may take to answer, e.g. 30".into(),
        );
    }
    if config.limits.start_timeout_seconds == 0 {
        report(
            "limits.start_timeout_seconds",
            "is 0; set how many seconds an upstream may take to start, e.g. 20".into(),
        );
    }

    if config.delegation.max_depth > 16 {
        report(
            "delegation.max_depth",
            format!(
                "{} hops is more than the maximum of 16; a deep chain is hard to audit",
                config.delegation.max_depth
            ),
        );
    }
    let approvals = &config.approvals;
    if approvals.ttl_seconds == 0 {
        report(
            "approvals.ttl_seconds",
            "is 0; set how many seconds an approval request stays open, e.g. 900".into(),
        );
    }
    if approvals.wait_seconds > 300 {
        report(
            "approvals.wait_seconds",
            format!(
                "{} seconds keeps agent requests open too long; use at most 300 and let agents retry",
                approvals.wait_seconds
            ),
        );
    }
    if let Some(url) = &approvals.webhook_url {
        match url::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            _ => report(
                "approvals.webhook_url",
                format!("{url:?} is not an http:// or https:// URL"),
            ),
        }
        if approvals.webhook_secret_env.is_none() && approvals.webhook_secret_file.is_none() {
            report(
                "approvals.webhook_url",
                "is set without a signing key; set approvals.webhook_secret_env or approvals.webhook_secret_file so receivers can verify requests".into(),
            );
        }
    }
    if approvals.webhook_secret_env.is_some() && approvals.webhook_secret_file.is_some() {
        report(
            "approvals.webhook_secret_file",
            "both webhook_secret_env and webhook_secret_file are set; keep one".into(),
        );
    }
    if let Some(file) = &config.admin.token_file
        && !file.is_file()
    {
        report(
            "admin.token_file",
            format!(
                "file {} does not exist; write the admin token into it or remove the key",
                file.display()
            ),
        );
    }

    for (name, upstream) in &config.upstreams {
        let key = format!("upstreams.{name}");
        if !is_server_name(name) {
            report(
                &key,
                format!(
                    "server name {name:?} must be 1 to 64 characters of lowercase letters, digits, '-' and '_', must not start or end with '_' and must not contain \"__\", because tools are named {{server}}__{{tool}}"
                ),
            );
        }
        match upstream.transport() {
            None if upstream.command.is_some() => report(
                &key,
                "sets both command and url; a server is either spawned (command) or reached over HTTP (url)".into(),
            ),
            None => report(
                &key,
                "sets neither command nor url; add command = \"program\" for a stdio server or url = \"http://host:port/mcp\" for a Streamable HTTP server".into(),
            ),
            Some(Transport::Http { url }) => match url::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => report(
                    &format!("{key}.url"),
                    format!("{url:?} is not an http:// or https:// URL"),
                ),
            },
            Some(Transport::Stdio { command, .. }) => {
                if command.trim().is_empty() {
                    report(&format!("{key}.command"), "is empty".into());
                }
            }
        }
        for name in &upstream.inherit_env {
            if name.starts_with("WARDEN_") {
                report(
                    &format!("{key}.inherit_env"),
                    format!(
                        "{name} is Warden's own setting and is never passed to an upstream; remove it"
                    ),
                );
            }
        }
        if upstream.url.is_some()
            && (!upstream.args.is_empty()
                || !upstream.env.is_empty()
                || !upstream.inherit_env.is_empty())
        {
            report(
                &key,
                "args and env apply to a spawned command, not to a url".into(),
            );
        }
        if upstream.timeout_seconds == Some(0) {
            report(
                &format!("{key}.timeout_seconds"),
                "is 0; remove it or set seconds greater than 0".into(),
            );
        }
    }

    if config.audit.checkpoint_interval_seconds > 31_536_000 {
        report(
            "audit.checkpoint_interval_seconds",
            format!(
                "{} is more than a year; use at most 31536000, or 0 for a checkpoint only at shutdown",
                config.audit.checkpoint_interval_seconds
            ),
        );
    }
    check_http(config, &mut report);
    for (name, upstream) in &config.upstreams {
        if let Some(credential) = &upstream.credential {
            let spawned = upstream.command.is_some();
            check_credential(
                &format!("upstreams.{name}.credential"),
                credential,
                if spawned {
                    Target::Spawned
                } else {
                    Target::Http
                },
                &mut report,
            );
        }
    }
    check_llm(config, &mut report);
    check_export(config, &mut report);
    check_store(config, &mut report);

    problems
}

/// Checks `[store]`: at most one of `path`, `url` and `url_env`, and a
/// `url` of the `postgres` scheme. Messages never show the URL, which may
/// contain a password.
fn check_store(config: &Config, report: &mut impl FnMut(&str, String)) {
    let store = &config.store;
    let chosen: Vec<&str> = [
        ("path", store.path.is_some()),
        ("url", store.url.is_some()),
        ("url_env", store.url_env.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    if chosen.len() > 1 {
        report(
            "store",
            format!(
                "{} are set together; set path for SQLite, or one of url and url_env for PostgreSQL",
                chosen.join(" and ")
            ),
        );
    }
    if let Some(url) = &store.url {
        match url::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "postgres" | "postgresql") => {}
            _ => report(
                "store.url",
                "is not a postgres:// URL; write e.g. \"postgres://warden@db.internal:5432/warden\"".into(),
            ),
        }
    }
    if let Some(variable) = &store.url_env
        && (variable.is_empty()
            || !variable
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        report(
            "store.url_env",
            format!(
                "{variable:?} is not an environment variable name; use letters, digits and '_'"
            ),
        );
    }
}

/// Methods an HTTP route can allow.
const ROUTE_METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// Headers that carry the agent's own credentials or connection details
/// and are never forwarded, whatever `forward_headers` says.
pub const NEVER_FORWARDED: [&str; 10] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "host",
    "connection",
    "transfer-encoding",
    "content-length",
    "txn-token",
    "x-api-key",
    "forwarded",
];

fn check_http(config: &Config, report: &mut impl FnMut(&str, String)) {
    for (name, route) in &config.http {
        let key = format!("http.{name}");
        if !is_server_name(name) {
            report(
                &key,
                format!(
                    "route name {name:?} must be 1 to 64 characters of lowercase letters, digits, '-' and '_'; agents reach it at /http/{{name}}/"
                ),
            );
        }
        match url::Url::parse(&route.url) {
            Ok(parsed)
                if matches!(parsed.scheme(), "http" | "https")
                    && parsed.host().is_some()
                    && parsed.query().is_none()
                    && parsed.fragment().is_none()
                    && parsed.username().is_empty()
                    && parsed.password().is_none() => {}
            _ => report(
                &format!("{key}.url"),
                format!(
                    "{:?} is not an http:// or https:// base URL without credentials, query or fragment, e.g. \"https://api.example.com/v1\"",
                    route.url
                ),
            ),
        }
        for method in &route.methods {
            if !ROUTE_METHODS.contains(&method.as_str()) {
                report(
                    &format!("{key}.methods"),
                    format!(
                        "{method:?} is not one of {}; write methods in capitals",
                        ROUTE_METHODS.join(", ")
                    ),
                );
            }
        }
        for param in &route.query_params {
            if param.is_empty() {
                report(
                    &format!("{key}.query_params"),
                    "contains an empty name".into(),
                );
            }
        }
        match &route.body_schema {
            None | Some(toml::Value::Table(_)) => {}
            Some(toml::Value::String(path)) => {
                if !Path::new(path).is_file() {
                    report(
                        &format!("{key}.body_schema"),
                        format!(
                            "file {path} does not exist; give a JSON Schema file or an inline table"
                        ),
                    );
                }
            }
            Some(_) => report(
                &format!("{key}.body_schema"),
                "must be a JSON Schema as a table, or the path of a JSON file".into(),
            ),
        }
        for header in &route.forward_headers {
            if http_header_name(header).is_none() {
                report(
                    &format!("{key}.forward_headers"),
                    format!("{header:?} is not a valid HTTP header name"),
                );
            } else if NEVER_FORWARDED.contains(&header.to_ascii_lowercase().as_str()) {
                report(
                    &format!("{key}.forward_headers"),
                    format!(
                        "{header} carries the agent's credentials or connection state and is never forwarded; remove it"
                    ),
                );
            }
        }
        if route.max_redirects.is_some_and(|hops| hops > 10) {
            report(
                &format!("{key}.max_redirects"),
                "is more than 10; APIs rarely redirect more than once or twice".into(),
            );
        }
        if route.timeout_seconds == Some(0) {
            report(
                &format!("{key}.timeout_seconds"),
                "is 0; remove it or set seconds greater than 0".into(),
            );
        }
        if let Some(credential) = &route.credential {
            check_credential(
                &format!("{key}.credential"),
                credential,
                Target::Http,
                report,
            );
        }
    }
}

/// Where a credential goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// HTTP requests: routes and `url` upstreams.
    Http,
    /// The environment of a spawned server.
    Spawned,
}

fn check_credential(
    key: &str,
    credential: &crate::CredentialConfig,
    target: Target,
    report: &mut impl FnMut(&str, String),
) {
    use crate::CredentialKind;

    let kind = credential.kind;
    let has_secret = credential.secret_env.is_some() || credential.secret_file.is_some();
    match (kind, target) {
        (CredentialKind::Env, Target::Http) => report(
            &format!("{key}.kind"),
            "env applies to a spawned command; use bearer, header, basic or txn_token for HTTP"
                .into(),
        ),
        (CredentialKind::Env, Target::Spawned) => {}
        (_, Target::Spawned) => report(
            &format!("{key}.kind"),
            format!(
                "{} cannot reach a spawned server; use kind = \"env\" with env = \"VARIABLE\"",
                kind.as_str()
            ),
        ),
        _ => {}
    }
    if kind == CredentialKind::TxnToken {
        if has_secret {
            report(
                key,
                "txn_token needs no secret: Warden signs each token; remove secret_env and secret_file".into(),
            );
        }
        if credential.ttl_seconds == Some(0) {
            report(
                &format!("{key}.ttl_seconds"),
                "is 0; remove it or set seconds greater than 0".into(),
            );
        }
    } else {
        match (&credential.secret_env, &credential.secret_file) {
            (Some(_), Some(_)) => report(
                &format!("{key}.secret_file"),
                "both secret_env and secret_file are set; keep one".into(),
            ),
            (None, None) => report(
                key,
                "has no secret source; set secret_env = \"VARIABLE\" or secret_file = \"path\" (secrets are never written in the config)".into(),
            ),
            (Some(variable), None) if variable.trim().is_empty() => {
                report(&format!("{key}.secret_env"), "is empty".into())
            }
            _ => {}
        }
    }
    match kind {
        CredentialKind::Header | CredentialKind::TxnToken => match &credential.header {
            None if kind == CredentialKind::Header => report(
                &format!("{key}.header"),
                "is missing; name the header that carries the secret, e.g. \"X-Api-Key\"".into(),
            ),
            Some(header) if http_header_name(header).is_none() => report(
                &format!("{key}.header"),
                format!("{header:?} is not a valid HTTP header name"),
            ),
            Some(header)
                if matches!(
                    header.to_ascii_lowercase().as_str(),
                    "host" | "cookie" | "connection" | "transfer-encoding" | "content-length"
                ) =>
            {
                report(
                    &format!("{key}.header"),
                    format!("{header} cannot carry a credential"),
                )
            }
            _ => {}
        },
        CredentialKind::Basic => {
            if credential.username.as_deref().is_none_or(str::is_empty) {
                report(
                    &format!("{key}.username"),
                    "is missing; basic authentication needs a user name".into(),
                );
            }
        }
        CredentialKind::Env => {
            if credential
                .env
                .as_deref()
                .is_none_or(|name| name.is_empty() || name.contains('='))
            {
                report(
                    &format!("{key}.env"),
                    "is missing or invalid; name the variable the server reads, e.g. \"API_KEY\""
                        .into(),
                );
            }
        }
        CredentialKind::Bearer => {}
    }
    let misplaced = [
        (
            "header",
            credential.header.is_some()
                && !matches!(kind, CredentialKind::Header | CredentialKind::TxnToken),
        ),
        (
            "username",
            credential.username.is_some() && kind != CredentialKind::Basic,
        ),
        (
            "env",
            credential.env.is_some() && kind != CredentialKind::Env,
        ),
        (
            "audience",
            credential.audience.is_some() && kind != CredentialKind::TxnToken,
        ),
        (
            "ttl_seconds",
            credential.ttl_seconds.is_some() && kind != CredentialKind::TxnToken,
        ),
    ];
    for (field, wrong) in misplaced {
        if wrong {
            report(
                &format!("{key}.{field}"),
                format!("does not apply to kind = \"{}\"; remove it", kind.as_str()),
            );
        }
    }
}

fn check_llm(config: &Config, report: &mut impl FnMut(&str, String)) {
    for (name, provider) in &config.llm {
        let key = format!("llm.{name}");
        if !is_server_name(name) {
            report(
                &key,
                format!(
                    "provider name {name:?} must be 1 to 64 characters of lowercase letters, digits, '-' and '_'; agents reach it at /llm/{{name}}/"
                ),
            );
        }
        match url::Url::parse(&provider.base_url) {
            Ok(parsed)
                if matches!(parsed.scheme(), "http" | "https")
                    && parsed.query().is_none()
                    && parsed.username().is_empty()
                    && parsed.password().is_none() => {}
            _ => report(
                &format!("{key}.base_url"),
                format!(
                    "{:?} is not an http:// or https:// URL without credentials or query, e.g. \"https://api.openai.com\"",
                    provider.base_url
                ),
            ),
        }
        match (&provider.api_key_env, &provider.api_key_file) {
            (Some(_), Some(_)) => report(
                &format!("{key}.api_key_file"),
                "both api_key_env and api_key_file are set; keep one".into(),
            ),
            (None, None) => report(
                &key,
                "has no API key source; set api_key_env = \"VARIABLE\" or api_key_file = \"path\" (keys are never written in the config)".into(),
            ),
            (Some(variable), None) if variable.trim().is_empty() => {
                report(&format!("{key}.api_key_env"), "is empty".into())
            }
            _ => {}
        }
        if provider.timeout_seconds == Some(0) {
            report(
                &format!("{key}.timeout_seconds"),
                "is 0; remove it or set seconds greater than 0".into(),
            );
        }
        if provider.models.iter().any(|model| model.trim().is_empty()) {
            report(
                &format!("{key}.models"),
                "contains an empty model name".into(),
            );
        }
    }
}

fn check_export(config: &Config, report: &mut impl FnMut(&str, String)) {
    let export = &config.export;
    if let Some(endpoint) = &export.otlp_endpoint {
        match url::Url::parse(endpoint) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            _ => report(
                "export.otlp_endpoint",
                format!(
                    "{endpoint:?} is not an http:// or https:// URL; write the full traces URL, e.g. \"http://127.0.0.1:4318/v1/traces\""
                ),
            ),
        }
    }
    for (header, variable) in &export.otlp_headers_env {
        if http_header_name(header).is_none() {
            report(
                "export.otlp_headers_env",
                format!("{header:?} is not a valid HTTP header name"),
            );
        }
        if variable.trim().is_empty() {
            report(
                "export.otlp_headers_env",
                format!("the variable name for header {header:?} is empty"),
            );
        }
    }
    if !(1..=1_000_000).contains(&export.queue_capacity) {
        report(
            "export.queue_capacity",
            format!("{} is not between 1 and 1000000", export.queue_capacity),
        );
    }
    if !(1..=10_000).contains(&export.batch_max_spans) {
        report(
            "export.batch_max_spans",
            format!("{} is not between 1 and 10000", export.batch_max_spans),
        );
    }
    if !(10..=60_000).contains(&export.batch_interval_ms) {
        report(
            "export.batch_interval_ms",
            format!(
                "{} is not between 10 and 60000 milliseconds",
                export.batch_interval_ms
            ),
        );
    }
    if !(1..=300).contains(&export.timeout_seconds) {
        report(
            "export.timeout_seconds",
            format!(
                "{} is not between 1 and 300 seconds",
                export.timeout_seconds
            ),
        );
    }
    if export.service_name.trim().is_empty() {
        report("export.service_name", "is empty".into());
    }
}

/// Returns the header name when `name` is a valid HTTP token.
fn http_header_name(name: &str) -> Option<&str> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    valid.then_some(name)
}

/// Returns true for a SPIFFE trust domain name.
pub(crate) fn is_trust_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

fn is_server_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.contains("__")
        && !name.starts_with('_')
        && !name.ends_with('_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(text: &str) -> Vec<Problem> {
        Config::parse(text).expect("parse").check()
    }

    #[test]
    fn check_accepts_defaults() {
        assert!(Config::default().check().is_empty());
    }

    #[test]
    fn check_names_bad_listen_address() {
        let problems = problems_of("[server]\nlisten = \"localhost\"\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "server.listen");
        assert!(problems[0].message.contains("\"localhost\""));
    }

    #[test]
    fn check_rejects_upstream_with_both_transports() {
        let problems =
            problems_of("[upstreams.fs]\ncommand = \"x\"\nurl = \"http://127.0.0.1:1/mcp\"\n");
        assert!(problems.iter().any(|p| p.key == "upstreams.fs"));
    }

    #[test]
    fn check_rejects_double_underscore_server_name() {
        let problems = problems_of("[upstreams.a__b]\ncommand = \"x\"\n");
        assert!(problems.iter().any(|p| p.message.contains("\"__\"")));
    }

    #[test]
    fn check_rejects_no_trust_domain() {
        let problems = problems_of("[identity]\ndev_issuer = false\n");
        assert!(problems.iter().any(|p| p.key == "trust_domain"));
    }

    #[test]
    fn check_rejects_large_leeway() {
        let problems = problems_of("[identity]\nleeway_seconds = 3600\n");
        assert!(problems.iter().any(|p| p.key == "identity.leeway_seconds"));
    }

    #[test]
    fn check_rejects_missing_bundle_file() {
        let problems = problems_of(
            "[[trust_domain]]\nname = \"acme.test\"\nbundle = \"/nonexistent/bundle.json\"\n",
        );
        assert!(problems.iter().any(|p| p.key == "trust_domain[0].bundle"));
    }

    #[test]
    fn check_rejects_default_ttl_above_max() {
        let problems = problems_of("[tasks]\ndefault_ttl_seconds = 1000\nmax_ttl_seconds = 900\n");
        assert!(
            problems
                .iter()
                .any(|p| p.key == "tasks.default_ttl_seconds")
        );
    }

    fn keys_of(text: &str) -> Vec<String> {
        problems_of(text).into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn check_accepts_a_complete_route() {
        let text = r#"
[http.github]
url = "https://api.github.com"
methods = ["GET", "POST"]
classes = ["read"]
query_params = ["q"]
forward_headers = ["X-GitHub-Api-Version"]
body_schema = { type = "object", properties = { title = { type = "string" } } }
[http.github.credential]
kind = "bearer"
secret_env = "GITHUB_TOKEN"
"#;
        assert_eq!(keys_of(text), Vec::<String>::new());
    }

    #[test]
    fn check_rejects_bad_routes() {
        let text = r#"
[http.bad]
url = "https://user:pw@api.test/?x=1"
methods = ["get"]
forward_headers = ["Cookie"]
max_redirects = 50
"#;
        let keys = keys_of(text);
        for key in [
            "http.bad.url",
            "http.bad.methods",
            "http.bad.forward_headers",
            "http.bad.max_redirects",
        ] {
            assert!(
                keys.contains(&key.to_owned()),
                "{key} not reported: {keys:?}"
            );
        }
    }

    #[test]
    fn check_matches_credentials_to_their_target() {
        let text = r#"
[http.a]
url = "https://a.test"
[http.a.credential]
kind = "env"
env = "X"
secret_env = "S"

[http.b]
url = "https://b.test"
[http.b.credential]
kind = "txn_token"
secret_file = "/tmp/x"

[http.c]
url = "https://c.test"
[http.c.credential]
kind = "header"
secret_env = "S"

[upstreams.s]
command = "server"
[upstreams.s.credential]
kind = "bearer"
secret_env = "S"
"#;
        let keys = keys_of(text);
        for key in [
            "http.a.credential.kind",
            "http.b.credential",
            "http.c.credential.header",
            "upstreams.s.credential.kind",
        ] {
            assert!(
                keys.contains(&key.to_owned()),
                "{key} not reported: {keys:?}"
            );
        }
    }

    #[test]
    fn check_requires_a_secret_source_once() {
        let keys =
            keys_of("[http.a]\nurl = \"https://a.test\"\n[http.a.credential]\nkind = \"bearer\"\n");
        assert_eq!(keys, vec!["http.a.credential".to_owned()]);
        let keys = keys_of(
            "[http.a]\nurl = \"https://a.test\"\n[http.a.credential]\nkind = \"bearer\"\nsecret_env = \"A\"\nsecret_file = \"b\"\n",
        );
        assert_eq!(keys, vec!["http.a.credential.secret_file".to_owned()]);
    }

    #[test]
    fn check_rejects_bad_model_providers_and_exports() {
        let text = r#"
[llm.openai]
kind = "openai"
base_url = "ftp://api.openai.com"

[export]
otlp_endpoint = "collector:4318"
batch_interval_ms = 1
"#;
        let keys = keys_of(text);
        for key in [
            "llm.openai.base_url",
            "llm.openai",
            "export.otlp_endpoint",
            "export.batch_interval_ms",
        ] {
            assert!(
                keys.contains(&key.to_owned()),
                "{key} not reported: {keys:?}"
            );
        }
    }

    #[test]
    fn check_accepts_postgres_store() {
        assert!(problems_of("[store]\nurl = \"postgres://warden@db:5432/warden\"\n").is_empty());
        assert!(problems_of("[store]\nurl_env = \"WARDEN_DATABASE_URL\"\n").is_empty());
    }

    #[test]
    fn check_rejects_two_store_locations() {
        let problems = problems_of(
            "[store]\npath = \"warden.db\"\nurl = \"postgres://db/warden\"\nurl_env = \"DB\"\n",
        );

        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "store");
        assert!(problems[0].message.contains("path and url and url_env"));
    }

    #[test]
    fn check_rejects_other_scheme_without_showing_url() {
        let problems = problems_of("[store]\nurl = \"mysql://root:hunter2@db/warden\"\n");

        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "store.url");
        assert!(!problems[0].message.contains("hunter2"));
    }

    #[test]
    fn check_rejects_bad_url_env_name() {
        let problems = problems_of("[store]\nurl_env = \"DB URL\"\n");

        assert_eq!(problems[0].key, "store.url_env");
    }

    #[test]
    fn postgres_url_reads_the_named_variable() {
        let config =
            Config::parse("[store]\nurl_env = \"WARDEN_CONFIG_TEST_UNSET_URL\"\n").expect("parse");

        let error = config.store.postgres_url().expect_err("unset variable");

        assert!(error.contains("WARDEN_CONFIG_TEST_UNSET_URL"), "{error}");
        assert_eq!(Config::default().store.postgres_url(), Ok(None));
    }
}
