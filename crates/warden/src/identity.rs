//! `warden identity issue` and `warden identity bundle`.

use std::process::ExitCode;

use anyhow::Context as _;
use warden_identity::SpiffeId;

use crate::defaults::Effective;

/// Prints a JWT-SVID from the development issuer.
pub fn issue(
    config: &Effective,
    spiffe_id: &str,
    audience: Vec<String>,
    ttl: &str,
) -> anyhow::Result<ExitCode> {
    let config = &config.config;
    if !config.identity.dev_issuer {
        anyhow::bail!(
            "the development issuer is disabled (identity.dev_issuer = false); get JWT-SVIDs from your SPIRE agent"
        );
    }
    let issuer = warden_gateway::server::load_dev_issuer(config)?;
    let id = SpiffeId::parse(spiffe_id)?;
    let ttl = parse_duration(ttl)?;
    let audience = if audience.is_empty() {
        vec![config.identity.audience.clone()]
    } else {
        audience
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token = issuer.issue(&id, &audience, ttl, now)?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// Prints the development issuer's SPIFFE bundle.
pub fn bundle(config: &Effective) -> anyhow::Result<ExitCode> {
    let issuer = warden_gateway::server::load_dev_issuer(&config.config)?;
    println!("{}", serde_json::to_string_pretty(&issuer.bundle())?);
    Ok(ExitCode::SUCCESS)
}

/// Parses `300`, `300s`, `5m` or `1h` into seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((index, _)) => text.split_at(index),
        None => (text, "s"),
    };
    let value: u64 = number
        .parse()
        .with_context(|| format!("invalid duration {text:?}; write e.g. 300, 300s, 5m or 1h"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => anyhow::bail!("invalid duration unit in {text:?}; use s, m or h"),
    };
    let seconds = value.saturating_mul(factor);
    if seconds == 0 {
        anyhow::bail!("duration {text:?} is zero; give a positive lifetime");
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_units() {
        assert_eq!(parse_duration("300").expect("plain"), 300);
        assert_eq!(parse_duration("45s").expect("seconds"), 45);
        assert_eq!(parse_duration("5m").expect("minutes"), 300);
        assert_eq!(parse_duration("1h").expect("hours"), 3600);
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("m").is_err());
    }
}
