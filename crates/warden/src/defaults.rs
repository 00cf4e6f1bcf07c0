//! The effective configuration: the file if one is given, completed with
//! the embedded defaults.
//!
//! Without upstreams, Warden serves the bundled example tool servers
//! (files, mail, billing) from its own binary, with the bundled policy pack.
//! With upstreams of its own, a configuration must name its policy
//! directory, since the bundled pack is written for the example servers.

use std::path::Path;

use anyhow::Context as _;
use warden_config::{Config, ToolConfig, UpstreamConfig};
use warden_gateway::PolicySource;

/// A configuration with its policy source.
pub struct Effective {
    /// The completed configuration.
    pub config: Config,
    /// Where policies come from.
    pub policy_source: PolicySource,
}

/// Loads the file (or the defaults) and completes it.
pub fn load(path: Option<&Path>) -> anyhow::Result<Effective> {
    let config = match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    complete(config)
}

/// Adds the example servers when no upstream is configured and picks the
/// policy source.
pub fn complete(mut config: Config) -> anyhow::Result<Effective> {
    let uses_examples = config.upstreams.is_empty();
    if uses_examples {
        let root = warden_examples::default_root(&config.data_dir());
        warden_examples::seed_workspace(&root).with_context(|| {
            format!("cannot create the example workspace in {}", root.display())
        })?;
        add_example_servers(&mut config, &root)?;
    }
    let policy_source = match (&config.policy.dir, uses_examples) {
        (Some(dir), _) => PolicySource::Dir(dir.clone()),
        (None, true) => PolicySource::Bundled,
        (None, false) => anyhow::bail!(
            "policy.dir is not set; with upstreams of your own, set [policy] dir to a directory of .cedar files (the bundled pack covers only the example servers)"
        ),
    };
    Ok(Effective {
        config,
        policy_source,
    })
}

/// A tool name and its classes.
type ToolClasses = (&'static str, &'static [&'static str]);

/// Adds the bundled `files`, `mail` and `billing` servers, run from this
/// binary, with their tool classes.
pub fn add_example_servers(config: &mut Config, root: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the warden executable")?;
    let exe = exe.to_string_lossy().into_owned();
    let classes: [(&str, &[ToolClasses]); 3] = [
        (
            "files",
            &[
                ("read_file", &["read"]),
                ("list_directory", &["read"]),
                ("write_file", &["write"]),
            ],
        ),
        ("mail", &[("send_email", &["external-send"])]),
        (
            "billing",
            &[
                ("refund", &["payment", "write"]),
                ("void_invoice", &["payment", "delete"]),
            ],
        ),
    ];
    for (server, tools) in classes {
        let upstream = UpstreamConfig {
            command: Some(exe.clone()),
            args: vec![
                "example-server".into(),
                server.into(),
                "--root".into(),
                root.to_string_lossy().into_owned(),
            ],
            tools: tools
                .iter()
                .map(|(tool, classes)| {
                    (
                        (*tool).to_owned(),
                        ToolConfig {
                            classes: classes.iter().map(|c| (*c).to_owned()).collect(),
                            ..ToolConfig::default()
                        },
                    )
                })
                .collect(),
            ..UpstreamConfig::default()
        };
        config.upstreams.insert(server.to_owned(), upstream);
    }
    Ok(())
}
