//! The request target of a route: the path after `/http/{route}` and the
//! query, decoded and normalised once, and the upstream URL built from
//! exactly those values.

use url::Url;

/// A normalised request target: what is decided and what is forwarded.
#[derive(Debug, PartialEq)]
pub struct Target {
    /// Normalised path, starting `/`, without a trailing slash.
    pub path: String,
    /// True when the request path ended with `/` (kept when forwarding).
    pub trailing_slash: bool,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
}

impl Target {
    /// Parses the raw path after `/http/{route}` and the raw query.
    ///
    /// Percent-escapes are decoded once and the path is normalised (`.`,
    /// `..` and empty components resolved), so `/public/%2e%2e/admin` and
    /// `//admin` both become `/admin`. An escaped `/`, `\` or NUL, a
    /// backslash, a control character or invalid UTF-8 is rejected, since
    /// servers disagree on what they mean. So is a `;`, raw or escaped,
    /// because Tomcat, Jetty and Spring cut a segment at `;`: they read
    /// `/admin;x=1` and `/public/..;/admin` as `/admin`. A query name or
    /// value with a control character after decoding is rejected too.
    pub fn parse(raw_path: &str, raw_query: Option<&str>) -> Result<Target, String> {
        let mut decoded = String::with_capacity(raw_path.len() + 1);
        decoded.push('/');
        for (index, segment) in raw_path.split('/').enumerate() {
            if index > 0 {
                decoded.push('/');
            }
            let lowered = segment.to_ascii_lowercase();
            if lowered.contains("%2f") || lowered.contains("%5c") || lowered.contains("%00") {
                return Err(format!(
                    "the path segment {segment:?} contains an escaped '/', '\\' or NUL; send the path unescaped"
                ));
            }
            let text = percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .map_err(|_| format!("the path segment {segment:?} is not UTF-8 after decoding"))?;
            if text.chars().any(|c| c == '\\' || c.is_control()) {
                return Err(format!(
                    "the path segment {segment:?} contains a backslash or a control character"
                ));
            }
            if text.contains(';') {
                return Err(format!(
                    "the path segment {segment:?} contains ';', which Java servers read as the \
                     start of path parameters; remove it from the path"
                ));
            }
            decoded.push_str(&text);
        }
        let trailing_slash = raw_path.ends_with('/') && !decoded.trim_matches('/').is_empty();
        let path = warden_core::path::normalize(&decoded);
        let query: Vec<(String, String)> = raw_query
            .map(|query| {
                url::form_urlencoded::parse(query.as_bytes())
                    .map(|(key, value)| (key.into_owned(), value.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        for (name, value) in &query {
            if name.chars().chain(value.chars()).any(char::is_control) {
                return Err(format!(
                    "query parameter {name:?} contains a NUL or another control character \
                     in its name or value; remove it"
                ));
            }
        }
        Ok(Target {
            path,
            trailing_slash,
            query,
        })
    }

    /// Builds the upstream URL: the base URL's path joined with this
    /// target's path, each component escaped again, and the query
    /// re-encoded from the decoded pairs.
    pub fn url(&self, base: &Url) -> Url {
        let mut url = base.clone();
        let mut path = base.path().trim_end_matches('/').to_owned();
        for component in self.path.split('/').filter(|c| !c.is_empty()) {
            path.push('/');
            path.extend(percent_encoding::utf8_percent_encode(component, SEGMENT));
        }
        if self.trailing_slash || path.is_empty() {
            path.push('/');
        }
        url.set_path(&path);
        if self.query.is_empty() {
            url.set_query(None);
        } else {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&self.query)
                .finish();
            url.set_query(Some(&query));
        }
        url
    }
}

/// Characters escaped in a forwarded path component.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');
