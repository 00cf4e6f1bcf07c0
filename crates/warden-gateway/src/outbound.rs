//! Outbound HTTP calls to upstream APIs, guarded against server-side request
//! forgery and credential leaks.
//!
//! A route forwards an agent's request to a configured upstream with a
//! credential that Warden injects. The agent controls the path and query, and
//! the upstream controls its redirects, so neither may steer the call, or the
//! credential, somewhere else:
//!
//! - Every hop's URL is parsed by the WHATWG URL parser, so `2130706433`,
//!   `0x7f.1` and `[::ffff:127.0.0.1]` all become the address they mean, and
//!   an IP-literal host is checked with [`denied_address`] before any
//!   connection.
//! - A host name is resolved once, by the client's own resolver, which drops
//!   denied addresses; the connection goes to an address that was checked.
//! - Redirects are followed here, not by reqwest, and only within the first
//!   URL's origin. A redirect to another origin is returned to the caller
//!   unfollowed, so the injected credential never leaves that origin.

mod address;
mod resolve;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode};
use url::{Host, Url};

pub use address::denied_address;
use resolve::{CheckedResolver, DeniedHost};

/// Destinations a client may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Only globally routable unicast addresses.
    Public,
    /// Loopback, private, shared (CGNAT) and link-local addresses too. Cloud
    /// metadata endpoints stay denied.
    Private,
}

/// A reqwest client whose every connection goes only to checked addresses.
#[derive(Debug, Clone)]
pub struct OutboundClient {
    client: reqwest::Client,
    reach: Reach,
}

/// One request to send through an [`OutboundClient`].
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// HTTP method of the first hop.
    pub method: Method,
    /// URL of the first hop; its origin is the only one redirects may stay in.
    pub url: Url,
    /// Headers sent on every hop. `Host`, `Content-Length` and
    /// `Transfer-Encoding` are dropped, because the client derives them from
    /// the URL and the body.
    pub headers: HeaderMap,
    /// Headers sent only to the first URL's origin, such as an injected
    /// credential. They replace headers of the same name in `headers`.
    pub sensitive: HeaderMap,
    /// Request body of the first hop.
    pub body: Bytes,
}

/// The result of [`OutboundClient::send`].
#[derive(Debug)]
pub struct Outcome {
    /// The last response received.
    pub response: reqwest::Response,
    /// URL of the request that produced `response`.
    pub final_url: Url,
    /// Number of redirects followed.
    pub hops: usize,
    /// The absolute target of a redirect to another origin, which was not
    /// followed; `response` is then that redirect.
    pub redirect_refused: Option<String>,
}

/// Error of an outbound call.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The URL's scheme, user info or destination address is not allowed.
    #[error("outbound request to {url} denied: {reason}")]
    Denied {
        /// The URL of the hop that was denied.
        url: String,
        /// The denied part of the URL and the reason.
        reason: String,
    },
    /// The upstream redirected more often than allowed.
    #[error(
        "outbound request to {url} redirected more than {max} times; \
         call the final URL directly or raise the redirect limit"
    )]
    TooManyRedirects {
        /// The URL of the first hop.
        url: String,
        /// The redirect limit.
        max: usize,
    },
    /// The upstream sent a redirect whose `Location` is not a usable URL.
    #[error("upstream at {url} sent an invalid redirect: {reason}")]
    BadRedirect {
        /// The URL of the hop that sent the redirect.
        url: String,
        /// The problem with its `Location`.
        reason: String,
    },
    /// Connecting, sending or receiving failed, or timed out.
    #[error("{0}")]
    Send(String),
}

/// Headers that describe a request body, dropped when a redirect turns the
/// request into a GET without body (as the Fetch standard does).
const BODY_HEADERS: &[HeaderName] = &[
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_LOCATION,
    header::CONTENT_TYPE,
];

/// Headers the client derives from the URL and the body itself.
const FRAMING_HEADERS: &[HeaderName] = &[
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

impl OutboundClient {
    /// Builds a client that reaches only addresses allowed under `reach`.
    ///
    /// `timeout` bounds each hop from sending the request to the end of the
    /// response body; `connect_timeout` bounds name resolution and
    /// connecting. The client follows no redirects by itself, uses no proxy
    /// from the environment and adds no credentials of its own.
    pub fn new(reach: Reach, timeout: Duration, connect_timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .referer(false)
            .dns_resolver(Arc::new(CheckedResolver { reach }))
            .timeout(timeout)
            .connect_timeout(connect_timeout)
            .build()
            .map_err(|error| {
                anyhow::anyhow!("building the outbound HTTP client failed: {error}")
            })?;
        Ok(Self { client, reach })
    }

    /// Returns the reach this client was built with.
    pub fn reach(&self) -> Reach {
        self.reach
    }

    /// Sends `request` and follows redirects itself, at most `max_redirects`
    /// hops.
    ///
    /// Each hop's URL must be http or https without user info, and its host
    /// must be allowed: an IP literal is checked here, a name by the
    /// client's resolver. A redirect whose target is a denied IP literal
    /// fails with [`OutboundError::Denied`]; one to another origin is not
    /// followed and is returned with [`Outcome::redirect_refused`] set. A 303
    /// turns the request into a GET without body (a HEAD stays a HEAD), a
    /// 301 or 302 turns a POST into a GET without body, and a 307 or 308
    /// keeps the method and body.
    pub async fn send(
        &self,
        request: OutboundRequest,
        max_redirects: usize,
    ) -> Result<Outcome, OutboundError> {
        let OutboundRequest {
            mut method,
            mut url,
            mut headers,
            sensitive,
            mut body,
        } = request;
        for name in FRAMING_HEADERS {
            headers.remove(name);
        }
        url.set_fragment(None);
        check_url(&url, self.reach)?;
        let first_url = url.to_string();
        let origin = url.origin();
        let mut hops = 0;
        loop {
            let mut hop_headers = headers.clone();
            // Every hop that gets here is in the first origin; the check is
            // repeated so that the credential cannot follow a change of that
            // rule.
            if url.origin() == origin {
                for name in sensitive.keys() {
                    hop_headers.remove(name);
                }
                for (name, value) in &sensitive {
                    hop_headers.append(name.clone(), value.clone());
                }
            }
            let mut hop = reqwest::Request::new(method.clone(), url.clone());
            *hop.headers_mut() = hop_headers;
            if !body.is_empty() || carries_body(&method) {
                *hop.body_mut() = Some(body.clone().into());
            }
            tracing::debug!(
                outbound.url = %url,
                http.method = %method,
                outbound.hop = hops,
                "sending outbound request"
            );
            let response = self
                .client
                .execute(hop)
                .await
                .map_err(|error| send_error(&url, &error))?;

            let status = response.status();
            let Some(location) = redirect_location(status, &response) else {
                return Ok(Outcome {
                    response,
                    final_url: url,
                    hops,
                    redirect_refused: None,
                });
            };
            let location = location.map_err(|reason| OutboundError::BadRedirect {
                url: url.to_string(),
                reason,
            })?;
            let mut next = url
                .join(&location)
                .map_err(|error| OutboundError::BadRedirect {
                    url: url.to_string(),
                    reason: format!("Location {location:?} is not a valid URL: {error}"),
                })?;
            next.set_fragment(None);
            if next.origin() != origin {
                // A denied IP literal is reported as such, so that the
                // attempt shows up as a denial and not as a plain redirect.
                if let Some(reason) = denied_host(&next, self.reach) {
                    return Err(denied(&next, reason));
                }
                // The location may carry what the upstream echoed (a
                // credential in its query), so only its origin is logged.
                tracing::debug!(
                    outbound.url = %url,
                    outbound.location_origin = %next.origin().ascii_serialization(),
                    "redirect to another origin not followed"
                );
                return Ok(Outcome {
                    response,
                    final_url: url,
                    hops,
                    redirect_refused: Some(next.to_string()),
                });
            }
            check_url(&next, self.reach)?;
            if hops >= max_redirects {
                return Err(OutboundError::TooManyRedirects {
                    url: first_url,
                    max: max_redirects,
                });
            }
            if drops_body(status, &method) {
                if method != Method::HEAD {
                    method = Method::GET;
                }
                body = Bytes::new();
                for name in BODY_HEADERS {
                    headers.remove(name);
                }
            }
            hops += 1;
            url = next;
        }
    }
}

/// Checks a hop's URL: scheme, user info, and the host when it is an IP
/// literal. A host name is checked when the client resolves it.
fn check_url(url: &Url, reach: Reach) -> Result<(), OutboundError> {
    let scheme = url.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(denied(
            url,
            format!("scheme {scheme:?} is not allowed; use http or https"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(denied(
            url,
            "the URL contains user info; send credentials as headers instead".to_owned(),
        ));
    }
    if url.host().is_none() {
        return Err(denied(url, "the URL has no host".to_owned()));
    }
    match denied_host(url, reach) {
        Some(reason) => Err(denied(url, reason)),
        None => Ok(()),
    }
}

/// Returns why the URL's host is denied when it is an IP literal.
fn denied_host(url: &Url, reach: Reach) -> Option<String> {
    let addr: IpAddr = match url.host()? {
        Host::Ipv4(addr) => addr.into(),
        Host::Ipv6(addr) => addr.into(),
        Host::Domain(_) => return None,
    };
    denied_address(addr, reach).map(|reason| format!("{addr} is {reason}"))
}

fn denied(url: &Url, reason: String) -> OutboundError {
    OutboundError::Denied {
        url: url.to_string(),
        reason,
    }
}

/// Returns the `Location` of a redirect response, `None` when the response
/// is not a redirect to follow, or why the `Location` is unusable.
fn redirect_location(
    status: StatusCode,
    response: &reqwest::Response,
) -> Option<Result<String, String>> {
    let is_redirect = matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    if !is_redirect {
        return None;
    }
    // A redirect status without Location is an ordinary response.
    let value = response.headers().get(header::LOCATION)?;
    Some(
        value
            .to_str()
            .map(str::to_owned)
            .map_err(|_| format!("Location {value:?} is not visible ASCII")),
    )
}

/// Returns true when a redirect with `status` turns a `method` request into
/// a GET without body.
fn drops_body(status: StatusCode, method: &Method) -> bool {
    match status {
        StatusCode::SEE_OTHER => true,
        StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND => *method == Method::POST,
        _ => false,
    }
}

/// Returns true when an empty body is still sent, as `Content-Length: 0`.
fn carries_body(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PUT || *method == Method::PATCH
}

/// Maps a reqwest error to an [`OutboundError`]: a host whose addresses are
/// all denied becomes [`OutboundError::Denied`], anything else
/// [`OutboundError::Send`] with the whole cause chain.
fn send_error(url: &Url, error: &reqwest::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut causes: Vec<String> = Vec::new();
    while let Some(current) = source {
        if let Some(host) = current.downcast_ref::<DeniedHost>() {
            return denied(url, host.to_string());
        }
        let text = current.to_string();
        if !causes.iter().any(|cause| cause.contains(&text)) {
            causes.push(text);
        }
        source = current.source();
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    OutboundError::Send(format!(
        "outbound request to {url} {what}: {}",
        causes.join(": ")
    ))
}

/// Reads a whole response body of at most `limit` bytes.
pub async fn read_limited(response: reqwest::Response, limit: usize) -> Result<Bytes, String> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(format!(
            "the response is larger than limits.max_upstream_message_bytes ({limit} bytes)"
        ));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|error| format!("the response broke: {}", describe_error(&error)))?;
        if body.len() + chunk.len() > limit {
            return Err(format!(
                "the response is larger than limits.max_upstream_message_bytes ({limit} bytes)"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// Describes a client error without its URL, which holds no secret but
/// repeats what the message already says.
pub fn describe_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
