//! The DNS resolver of the outbound client: it resolves a name once and
//! passes on only the addresses that [`denied_address`] allows, so the
//! connection goes to an address that was checked.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::{Reach, denied_address};

/// Resolver that drops denied addresses and fails when none is left.
#[derive(Debug)]
pub(super) struct CheckedResolver {
    pub(super) reach: Reach,
}

/// A host name whose every address is denied.
#[derive(Debug, thiserror::Error)]
#[error("host {host} has no allowed address: {}", describe(.denied))]
pub(super) struct DeniedHost {
    /// The host name as resolved.
    pub(super) host: String,
    /// Each address with the reason it was denied.
    pub(super) denied: Vec<String>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let reach = self.reach;
        let host: Arc<str> = Arc::from(name.as_str());
        Box::pin(async move {
            // Port 0 is replaced by the URL's port by the connector.
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((&*host, 0)).await?.collect();
            let (allowed, denied) = partition(resolved, reach);
            if allowed.is_empty() {
                return Err(Box::new(DeniedHost {
                    host: host.to_string(),
                    denied,
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            if !denied.is_empty() {
                tracing::debug!(
                    outbound.host = %host,
                    outbound.denied = ?denied,
                    "dropped denied addresses of outbound host"
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

fn describe(denied: &[String]) -> String {
    if denied.is_empty() {
        "it resolves to no address".to_owned()
    } else {
        denied.join(", ")
    }
}

/// Splits resolved addresses into the allowed ones and descriptions of the
/// denied ones.
fn partition(resolved: Vec<SocketAddr>, reach: Reach) -> (Vec<SocketAddr>, Vec<String>) {
    let mut allowed = Vec::with_capacity(resolved.len());
    let mut denied = Vec::new();
    for addr in resolved {
        match denied_address(addr.ip(), reach) {
            Some(reason) => denied.push(format!("{} is {reason}", addr.ip())),
            None => allowed.push(addr),
        }
    }
    (allowed, denied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolver_rejects_localhost_under_public() {
        let resolver = CheckedResolver {
            reach: Reach::Public,
        };
        let name: Name = "localhost".parse().expect("valid name");
        let error = match resolver.resolve(name).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error,
        };
        let denied = error
            .downcast_ref::<DeniedHost>()
            .expect("a DeniedHost error");
        assert_eq!(denied.host, "localhost");
        assert!(
            denied.denied.iter().any(|entry| entry.contains("loopback")),
            "{denied}"
        );
    }

    #[tokio::test]
    async fn resolver_keeps_localhost_under_private() {
        let resolver = CheckedResolver {
            reach: Reach::Private,
        };
        let name: Name = "localhost".parse().expect("valid name");
        let addrs: Vec<SocketAddr> = resolver.resolve(name).await.expect("resolves").collect();
        assert!(
            addrs.iter().all(|addr| addr.ip().is_loopback()),
            "{addrs:?}"
        );
        assert!(!addrs.is_empty());
    }

    #[test]
    fn partition_drops_only_denied() {
        let resolved: Vec<SocketAddr> = vec![
            "127.0.0.1:0".parse().expect("addr"),
            "8.8.8.8:0".parse().expect("addr"),
            "[::1]:0".parse().expect("addr"),
        ];
        let (allowed, denied) = partition(resolved, Reach::Public);
        assert_eq!(
            allowed,
            vec!["8.8.8.8:0".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(denied.len(), 2);
    }
}
