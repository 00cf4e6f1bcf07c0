//! Where policies come from: a directory of `.cedar` files, or the pack
//! bundled into the binary for the bundled example tool servers.

use std::path::PathBuf;

use warden_policy::{EngineOptions, PolicyEngine, PolicyLoadError, ToolDef};

/// The bundled policy pack: (file name, text).
pub const BUNDLED_PACK: &[(&str, &str)] = &[
    ("tasks.cedar", include_str!("../../../policies/tasks.cedar")),
    ("files.cedar", include_str!("../../../policies/files.cedar")),
    ("mail.cedar", include_str!("../../../policies/mail.cedar")),
    (
        "billing.cedar",
        include_str!("../../../policies/billing.cedar"),
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
    /// Parses and validates the policies against the tools.
    pub fn load(
        &self,
        tools: &[ToolDef],
        environment: &str,
    ) -> Result<PolicyEngine, PolicyLoadError> {
        let options = EngineOptions {
            environment: environment.to_owned(),
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
