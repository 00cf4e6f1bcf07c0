//! Semantic checks of a parsed configuration.
//!
//! Each [`Problem`] names the key, shows the bad value and says what to
//! write instead, so `warden check-config` can print it as it is.

use std::fmt;
use std::net::SocketAddr;

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

    problems
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
}
