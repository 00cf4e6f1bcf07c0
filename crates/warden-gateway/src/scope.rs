//! Task tool scopes.
//!
//! A task's scope is a list of patterns over qualified tool names
//! (`server__tool`): an exact name, `server__*` for every tool of one
//! server, or `*` for every tool. The scope is bound into the task token,
//! and Warden checks it before any policy runs.

/// Returns true when `pattern` is a well-formed scope entry.
pub fn is_valid_pattern(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some((server, tool)) = pattern.split_once("__") else {
        return false;
    };
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
    };
    name_ok(server) && (tool == "*" || name_ok(tool))
}

/// Returns true when `qualified` matches one of `patterns`.
pub fn allows(patterns: &[String], qualified: &str) -> bool {
    patterns.iter().any(|pattern| {
        if pattern == "*" {
            return true;
        }
        match pattern.strip_suffix("__*") {
            Some(server) => qualified
                .strip_prefix(server)
                .is_some_and(|rest| rest.starts_with("__")),
            None => pattern == qualified,
        }
    })
}

/// Returns true when the scope reaches a whole server: `*` or
/// `server__*`. Resources are offered per server, so reading one needs this.
pub fn allows_server(patterns: &[String], server: &str) -> bool {
    patterns
        .iter()
        .any(|pattern| pattern == "*" || pattern.strip_suffix("__*") == Some(server))
}

/// Returns true when every tool `pattern` matches is also matched by
/// `patterns`, so that a delegated scope never exceeds its parent's.
pub fn covers(patterns: &[String], pattern: &str) -> bool {
    if pattern == "*" {
        return patterns.iter().any(|p| p == "*");
    }
    if let Some(server) = pattern.strip_suffix("__*") {
        return patterns
            .iter()
            .any(|p| p == "*" || p.strip_suffix("__*") == Some(server));
    }
    allows(patterns, pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_exact_server_and_wildcard() {
        let scope = vec!["fs__read_file".to_owned(), "mail__*".to_owned()];
        assert!(allows(&scope, "fs__read_file"));
        assert!(allows(&scope, "mail__send_email"));
        assert!(!allows(&scope, "fs__write_file"));
        assert!(!allows(&scope, "mailer__send"));
        assert!(allows(&["*".to_owned()], "anything__x"));
    }

    #[test]
    fn covers_only_subsets() {
        let parent = vec!["fs__*".to_owned(), "mail__send_email".to_owned()];
        assert!(covers(&parent, "fs__read_file"));
        assert!(covers(&parent, "fs__*"));
        assert!(covers(&parent, "mail__send_email"));
        assert!(!covers(&parent, "mail__*"));
        assert!(!covers(&parent, "*"));
        assert!(!covers(&parent, "billing__refund"));
        assert!(covers(&["*".to_owned()], "*"));
    }

    #[test]
    fn pattern_validation() {
        assert!(is_valid_pattern("fs__read_file"));
        assert!(is_valid_pattern("fs__*"));
        assert!(is_valid_pattern("*"));
        assert!(!is_valid_pattern("fs*"));
        assert!(!is_valid_pattern("__x"));
        assert!(!is_valid_pattern("fs__"));
    }
}
