//! Where policies come from: a directory of `.cedar` files, or the pack
//! bundled into the binary for the bundled example tool servers.

use std::path::PathBuf;

use warden_config::Config;
use warden_policy::{EngineOptions, PolicyEngine, PolicyLoadError, RouteDef, ToolDef};

/// The bundled policy pack: (file name, text).
pub const BUNDLED_PACK: &[(&str, &str)] = &[
    ("tasks.cedar", include_str!("../../../policies/tasks.cedar")),
    ("files.cedar", include_str!("../../../policies/files.cedar")),
    ("mail.cedar", include_str!("../../../policies/mail.cedar")),
    (
        "billing.cedar",
        include_str!("../../../policies/billing.cedar"),
    ),
    (
        "models.cedar",
        include_str!("../../../policies/models.cedar"),
    ),
];

/// A source of policies.
#[derive(Debug, Clone)]
pub enum PolicySource {
    /// `.cedar` files in a directory, read at each load.
    Dir(PathBuf),
    /// The pack compiled into the binary.
    Bundled,
}

impl PolicySource {
    /// Parses and validates the policies against the tools and the
    /// configured HTTP routes.
    pub fn load(
        &self,
        tools: &[ToolDef],
        config: &Config,
    ) -> Result<PolicyEngine, PolicyLoadError> {
        let options = EngineOptions {
            environment: config.policy.environment.clone(),
            routes: route_defs(config).map_err(|message| PolicyLoadError::Schema { message })?,
        };
        match self {
            PolicySource::Dir(dir) => PolicyEngine::load_dir(dir, tools, options),
            PolicySource::Bundled => {
                let sources: Vec<(String, String)> = BUNDLED_PACK
                    .iter()
                    .map(|(name, text)| (format!("bundled/{name}"), (*text).to_owned()))
                    .collect();
                PolicyEngine::from_sources(&sources, tools, options)
            }
        }
    }

    /// Describes the source for logs.
    pub fn describe(&self) -> String {
        match self {
            PolicySource::Dir(dir) => dir.display().to_string(),
            PolicySource::Bundled => "bundled pack".to_owned(),
        }
    }
}

/// Returns the policy view of the configured HTTP routes, reading body
/// schemas given as files.
pub fn route_defs(config: &Config) -> Result<Vec<RouteDef>, String> {
    let mut routes = Vec::with_capacity(config.http.len());
    for (name, route) in &config.http {
        let body_schema = match &route.body_schema {
            None => None,
            Some(toml::Value::String(path)) => {
                let text = std::fs::read_to_string(path).map_err(|error| {
                    format!("cannot read http.{name}.body_schema file {path}: {error}")
                })?;
                let schema = serde_json::from_str(&text).map_err(|error| {
                    format!("http.{name}.body_schema file {path} is not JSON: {error}")
                })?;
                Some(schema)
            }
            Some(table) => Some(serde_json::to_value(table).map_err(|error| {
                format!("http.{name}.body_schema cannot be read as JSON Schema: {error}")
            })?),
        };
        let host = url::Url::parse(&route.url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
            .unwrap_or_default();
        routes.push(RouteDef {
            name: name.clone(),
            classes: route.classes.clone(),
            query_params: route.query_params.clone(),
            body_schema,
            host,
            labels: route.labels.clone(),
        });
    }
    Ok(routes)
}
