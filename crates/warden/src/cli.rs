//! Command-line arguments and the dispatch to each command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::{approvals, defaults, demo, identity, inspect, policy_test, replay};

/// Number of newest traces that `warden policy replay` replays by default.
const DEFAULT_REPLAY_TRACES: u64 = 20;

/// Warden: a runtime authorization gateway for AI agents.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML). Every command reads its data directory
    /// (keys, SQLite store) and listener from it. Without it, the embedded
    /// defaults apply: listener 127.0.0.1:8787, data directory
    /// $WARDEN_DATA_DIR or ~/.local/share/warden, the development issuer,
    /// and the bundled example tool servers and policy pack.
    #[arg(long, short, global = true, env = "WARDEN_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until interrupted (SIGHUP reloads policies).
    Serve,
    /// Run the gateway, the bundled tool servers and a scripted agent, then
    /// print the task's trace.
    Demo,
    /// Validate a configuration file and explain each problem.
    CheckConfig {
        /// The file to check; defaults to --config.
        file: Option<PathBuf>,
    },
    /// Development workload identities for machines without SPIRE.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Review calls held for human approval (needs WARDEN_ADMIN_TOKEN).
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Read task traces from the store.
    #[command(subcommand)]
    Trace(TraceCommand),
    /// Check policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Review pinned tool definitions: a changed or hidden-text definition
    /// blocks its tool until accepted here.
    #[command(subcommand)]
    Tools(ToolsCommand),
    /// Serve one bundled example tool server on stdio (spawned by Warden).
    #[command(hide = true)]
    ExampleServer {
        /// Server name: files, mail, billing or testkit.
        name: String,
        /// Directory holding the server's state.
        #[arg(long)]
        root: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Print a JWT-SVID signed by the development issuer.
    Issue {
        /// SPIFFE ID of the workload, e.g. spiffe://warden.local/agent/support-bot.
        spiffe_id: String,
        /// Audience to put in `aud`; repeat for several. Defaults to the
        /// configured identity.audience.
        #[arg(long)]
        audience: Vec<String>,
        /// Lifetime, e.g. 300, 300s, 5m or 1h (seconds when no unit).
        #[arg(long, default_value = "5m")]
        ttl: String,
    },
    /// Print the development issuer's SPIFFE bundle (a JWK set).
    Bundle,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List approval requests, newest first.
    List {
        /// Status to list: pending, approved, denied, consumed, expired or all.
        #[arg(long, default_value = "pending")]
        status: String,
        /// Gateway URL; defaults to http://LISTEN from the configuration.
        #[arg(long)]
        url: Option<String>,
    },
    /// Print one approval request.
    Show {
        /// Approval id.
        id: String,
        /// Gateway URL; defaults to http://LISTEN from the configuration.
        #[arg(long)]
        url: Option<String>,
    },
    /// Approve a held call; the same call then runs once.
    Approve {
        /// Approval id.
        id: String,
        /// Name recorded in the trace as the approver (default "admin").
        #[arg(long)]
        approver: Option<String>,
        /// Reason recorded in the trace.
        #[arg(long)]
        reason: Option<String>,
        /// Gateway URL; defaults to http://LISTEN from the configuration.
        #[arg(long)]
        url: Option<String>,
    },
    /// Deny a held call; the decision is final for that call.
    Deny {
        /// Approval id.
        id: String,
        /// Name recorded in the trace as the approver (default "admin").
        #[arg(long)]
        approver: Option<String>,
        /// Reason recorded in the trace.
        #[arg(long)]
        reason: Option<String>,
        /// Gateway URL; defaults to http://LISTEN from the configuration.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// List recent traces, newest first.
    List {
        /// Maximum number of traces to list (at least 1).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
    },
    /// Print one trace's steps as a tree.
    Show {
        /// Trace id or task id.
        id: String,
        /// Print the records as JSON lines instead.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load the policies against the upstreams' tools and report errors.
    /// Starts the configured upstreams to read their tool schemas.
    Validate {
        /// Policy directory; defaults to policy.dir or the bundled pack.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print the Cedar schema generated from the upstreams' tools.
    Schema,
    /// Run declarative policy test cases and print `ok   NAME` or
    /// `FAIL NAME: ...` per case and a summary. Exits with status 1 when a
    /// case fails and 2 when a test file is invalid.
    ///
    /// Each *.toml file in DIR contains [[case]] tables: one step (`tool`,
    /// `route`, `model`, `list_tool`, `start_task` or `delegate`), its
    /// `task`, `memory`, `arguments` and the `expect`ed decision (allow,
    /// deny or hold), optionally with the exact deciding `policy_ids`. The
    /// tools come from the file's [[tool]] tables. Without them, Warden
    /// starts the configured upstreams and reads their tools. The routes
    /// come from the file's [[route]] tables or the configuration's
    /// [http.NAME] sections.
    Test {
        /// Directory of *.toml test files, or one test file.
        dir: PathBuf,
        /// Policy directory; defaults to policy.dir or the bundled pack.
        #[arg(long, value_name = "DIR")]
        policies: Option<PathBuf>,
    },
    /// Re-decide recorded steps with a candidate policy set and report
    /// every decision that would change. Reads the store of --config and
    /// starts the configured upstreams for their tools. Exits with status
    /// 0 whether or not decisions change, and 1 when the replay fails.
    ///
    /// Replays the tool.decision, http.decision and model.decision records
    /// with the task memory rebuilt from the trace. A record written with
    /// audit.redact_arguments is reported as not replayable.
    Replay {
        /// Directory of the candidate *.cedar files.
        #[arg(long, value_name = "DIR")]
        policies: PathBuf,
        /// Replay one trace, given by trace id or task id.
        #[arg(long, value_name = "ID", conflicts_with = "limit")]
        trace: Option<String>,
        /// Replay the N newest traces (default 20, at least 1).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain of the audit log and every signed checkpoint
    /// of its head, and name the first bad record. Exits with status 1
    /// when the log is invalid.
    Verify {
        /// JWK set file (JSON) with the keys that signed the checkpoints,
        /// as `warden audit jwks` prints it. Defaults to the public half of
        /// the signing key in the data directory.
        #[arg(long, value_name = "FILE")]
        jwks: Option<PathBuf>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the JWK set that verifies the checkpoints, for `audit verify
    /// --jwks` on a machine without Warden's key.
    Jwks,
}

#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// List pinned tools with their status (accepted or blocked), their
    /// classes and labels after annotations, and who accepted them.
    List {
        /// Print one JSON object per tool.
        #[arg(long)]
        json: bool,
    },
    /// Show the definition a blocked tool offers now against the accepted
    /// one, line by line, with invisible characters escaped, and the
    /// pending definition's hash to pass to `accept --hash`.
    Diff {
        /// Qualified tool name, e.g. `files__read_file`.
        tool: String,
    },
    /// Accept the definition a blocked tool offers now; the gateway
    /// unblocks the tool and reloads policies on the tool's next call or
    /// `tools/list`.
    Accept {
        /// Qualified tool name, e.g. `files__read_file`.
        tool: String,
        /// Name recorded as the approver (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Hash printed by `warden tools diff` (at least its first 12 hex
        /// digits). Accepts only the definition you reviewed: the command
        /// fails with exit status 1 when the server has since offered
        /// another one.
        #[arg(long, value_name = "PREFIX")]
        hash: Option<String>,
    },
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::ExampleServer { name, root } = &cli.command {
        warden_examples::run(name, root)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::CheckConfig { file } = &cli.command {
        let Some(file) = file.as_ref().or(cli.config.as_ref()) else {
            anyhow::bail!("no file to check; run `warden check-config FILE` or pass --config FILE");
        };
        return Ok(inspect::check_config(file));
    }
    let config = defaults::load(cli.config.as_deref())?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.config.server.worker_threads {
        builder.worker_threads(threads);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve => {
            init_logging("info");
            runtime.block_on(serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            init_logging("error");
            runtime.block_on(demo::run())
        }
        Command::Identity(IdentityCommand::Issue {
            spiffe_id,
            audience,
            ttl,
        }) => identity::issue(&config, &spiffe_id, audience, &ttl),
        Command::Identity(IdentityCommand::Bundle) => identity::bundle(&config),
        Command::Approvals(command) => runtime.block_on(run_approvals(&config, command)),
        Command::Trace(TraceCommand::List { limit }) => {
            runtime.block_on(inspect::trace_list(&config, limit as usize))
        }
        Command::Trace(TraceCommand::Show { id, json }) => {
            runtime.block_on(inspect::trace_show(&config, &id, json))
        }
        Command::Policy(PolicyCommand::Validate { dir }) => {
            init_logging("warn");
            runtime.block_on(inspect::policy_validate(&config, dir))
        }
        Command::Policy(PolicyCommand::Schema) => {
            init_logging("warn");
            runtime.block_on(inspect::policy_schema(&config))
        }
        Command::Policy(PolicyCommand::Test { dir, policies }) => {
            init_logging("warn");
            runtime.block_on(policy_test::run(&config, &dir, policies))
        }
        Command::Policy(PolicyCommand::Replay {
            policies,
            trace,
            limit,
            json,
        }) => {
            init_logging("warn");
            let request = replay::ReplayRequest {
                policies,
                trace,
                limit: usize::try_from(limit.unwrap_or(DEFAULT_REPLAY_TRACES))
                    .unwrap_or(usize::MAX),
                json,
            };
            runtime.block_on(replay::run(&config, request))
        }
        Command::Audit(AuditCommand::Verify { jwks, json }) => {
            runtime.block_on(inspect::audit_verify(&config, jwks.as_deref(), json))
        }
        Command::Audit(AuditCommand::Jwks) => inspect::audit_jwks(&config),
        Command::Tools(ToolsCommand::List { json }) => {
            runtime.block_on(crate::tools::list(&config, json))
        }
        Command::Tools(ToolsCommand::Diff { tool }) => {
            runtime.block_on(crate::tools::diff(&config, &tool))
        }
        Command::Tools(ToolsCommand::Accept { tool, by, hash }) => {
            runtime.block_on(crate::tools::accept(&config, &tool, by, hash.as_deref()))
        }
        Command::ExampleServer { .. } | Command::CheckConfig { .. } => Ok(ExitCode::SUCCESS),
    }
}

async fn run_approvals(
    config: &defaults::Effective,
    command: ApprovalsCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        ApprovalsCommand::List { status, url } => {
            approvals::list(&approvals::AdminClient::new(config, url)?, &status).await
        }
        ApprovalsCommand::Show { id, url } => {
            approvals::show(&approvals::AdminClient::new(config, url)?, &id).await
        }
        ApprovalsCommand::Approve {
            id,
            approver,
            reason,
            url,
        } => {
            let client = approvals::AdminClient::new(config, url)?;
            approvals::decide(&client, &id, true, approver, reason).await
        }
        ApprovalsCommand::Deny {
            id,
            approver,
            reason,
            url,
        } => {
            let client = approvals::AdminClient::new(config, url)?;
            approvals::decide(&client, &id, false, approver, reason).await
        }
    }
}

async fn serve(config: defaults::Effective) -> anyhow::Result<()> {
    let gateway = warden_gateway::Gateway::build(
        config.config,
        warden_gateway::GatewayOptions {
            policy_source: config.policy_source,
            admin_token: std::env::var("WARDEN_ADMIN_TOKEN").ok(),
        },
    )
    .await?;
    println!("warden listening on http://{}", gateway.local_addr());
    gateway.serve(shutdown_signal()).await
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let json = std::env::var("WARDEN_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
