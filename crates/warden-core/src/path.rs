//! Lexical normalisation of file paths.
//!
//! Policies compare paths by whole components: `/srv/data_private` is not
//! inside `/srv/data`. Normalisation removes empty and `.` components and
//! resolves `..` against the preceding component, without touching the file
//! system. A `..` that would climb above the root stays at the root.
//!
//! NOTE: symbolic links are not resolved here because the files live on
//! the upstream's machine. An upstream that follows a link out of an
//! allowed directory must check the resolved path itself, as the reference
//! filesystem server does.

/// Longest path argument Warden decides on, in bytes. Longer paths are
/// refused: no file system accepts them (Linux's `PATH_MAX` is 4096), and
/// each component costs an ancestor entity in the policy request.
pub const MAX_PATH_BYTES: usize = 4096;

/// Most components a path argument may have, for the same reason.
pub const MAX_PATH_COMPONENTS: usize = 256;

/// Most bytes of path arguments in one call, summed over all of them, so
/// that an array of long paths cannot multiply the work.
pub const MAX_TOTAL_PATH_BYTES: usize = 64 * 1024;

/// Returns why `path` is too long to decide on, or `None` when it is not.
pub fn check_limits(path: &str) -> Option<String> {
    if path.len() > MAX_PATH_BYTES {
        return Some(format!(
            "a path of at most {MAX_PATH_BYTES} bytes (this one has {})",
            path.len()
        ));
    }
    let components = path.split('/').filter(|c| !c.is_empty()).count();
    if components > MAX_PATH_COMPONENTS {
        return Some(format!(
            "a path of at most {MAX_PATH_COMPONENTS} components (this one has {components})"
        ));
    }
    None
}

/// Returns the normalised form of `path`.
///
/// Absolute paths stay absolute. A relative path is normalised on its own
/// and stays relative, so it never lies inside an absolute directory.
/// Only `/` separates components, as on the POSIX upstreams Warden fronts:
/// a backslash is an ordinary character of a file name there, so treating
/// it as a separator would let `a\..\b` mean one path to the policy and
/// another to the upstream.
pub fn normalize(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

/// Returns the proper ancestors of an already normalised absolute path,
/// nearest first: `/a/b/c` gives `/a/b`, `/a`, `/`. A relative path has
/// no ancestors.
pub fn ancestors(normalized: &str) -> Vec<String> {
    if !normalized.starts_with('/') || normalized == "/" {
        return Vec::new();
    }
    let mut result = Vec::new();
    let mut current = normalized;
    while let Some(index) = current.rfind('/') {
        current = &current[..index];
        if current.is_empty() {
            result.push("/".to_owned());
            break;
        }
        result.push(current.to_owned());
    }
    result
}

/// Returns true when `path` equals `directory` or lies below it, comparing
/// whole components after normalising both.
pub fn is_within(path: &str, directory: &str) -> bool {
    is_within_normalized(&normalize(path), &normalize(directory))
}

/// Returns true when the already normalised `path` equals `directory` or
/// lies below it, comparing whole components without allocating.
pub fn is_within_normalized(path: &str, directory: &str) -> bool {
    match path.strip_prefix(directory) {
        Some("") => true,
        Some(rest) => directory.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_dots_and_slashes() {
        assert_eq!(normalize("/srv//data/./a/../b"), "/srv/data/b");
        assert_eq!(normalize("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(normalize("/srv/data/"), "/srv/data");
        assert_eq!(normalize("/srv/x\\..\\y"), "/srv/x\\..\\y");
    }

    #[test]
    fn normalize_keeps_relative_paths_relative() {
        assert_eq!(normalize("a/../../b"), "../b");
        assert_eq!(normalize("./"), ".");
    }

    #[test]
    fn check_limits_rejects_long_paths() {
        assert!(check_limits("/srv/data/a.txt").is_none());
        assert!(check_limits(&"a/".repeat(MAX_PATH_COMPONENTS + 1)).is_some());
        assert!(check_limits(&"a".repeat(MAX_PATH_BYTES + 1)).is_some());
    }

    #[test]
    fn ancestors_lists_each_component() {
        assert_eq!(ancestors("/a/b/c"), vec!["/a/b", "/a", "/"]);
        assert!(ancestors("/").is_empty());
        assert!(ancestors("rel/x").is_empty());
    }

    #[test]
    fn is_within_normalized_matches_ancestors() {
        for (path, directory) in [
            ("/srv/data/a", "/srv/data"),
            ("/srv/data", "/srv/data"),
            ("/srv/data_private/a", "/srv/data"),
            ("/srv/data/a", "/"),
            ("/", "/"),
            ("/srv", "/srv/data"),
            ("rel/a", "/"),
        ] {
            let by_ancestors = path == directory || ancestors(path).contains(&directory.to_owned());
            assert_eq!(
                is_within_normalized(path, directory),
                by_ancestors,
                "{path} in {directory}"
            );
        }
    }

    #[test]
    fn is_within_compares_whole_components() {
        assert!(is_within("/srv/data/a.txt", "/srv/data"));
        assert!(is_within("/srv/data", "/srv/data/"));
        assert!(!is_within("/srv/data_private/key.pem", "/srv/data"));
        assert!(!is_within("/srv/data/../data_private/key.pem", "/srv/data"));
        assert!(!is_within("srv/data/a", "/srv/data"));
        assert!(!is_within(
            "/srv/data/x\\..\\..\\y/../../data_private/k",
            "/srv/data"
        ));
    }
}
