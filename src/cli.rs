//! Command line: `ibkr-mcp serve`, `ibkr-mcp sim`, `ibkr-mcp tools`, `ibkr-mcp spec patch|report|diff`,
//! `ibkr-mcp halt|resume` (the kill switch).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::spec;

/// MCP server for the Interactive Brokers Web API.
#[derive(Debug, Parser)]
#[command(name = "ibkr-mcp", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the MCP server (streamable HTTP on --listen, or stdio).
    Serve(Box<crate::config::ServeConfig>),
    /// Run the gateway simulator alone (HTTPS with a self-signed certificate, or plain HTTP),
    /// serving `/v1/api` like IBKR's Client Portal Gateway and `/sim/*` to steer it.
    Sim(crate::config::SimArgs),
    /// List every tool this build offers (name, toolset, access, IBKR operation).
    Tools {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ToolsFormat::Text)]
        format: ToolsFormat,
    },
    /// Work with IBKR's OpenAPI document: write the repaired document, or report on a repair.
    #[command(subcommand)]
    Spec(SpecCommand),
    /// Throw the kill switch: a running server (and any started later) refuses every tool that
    /// changes anything until `ibkr-mcp resume`. No tool can lift it.
    Halt {
        /// Also cancel the working orders of the accounts the server may act on (the running
        /// server does it within a few seconds and records each in its audit log).
        #[arg(long)]
        cancel_orders: bool,
        /// Why (shown to the model and in `get_session_status`).
        #[arg(long, default_value = "stopped by the user")]
        reason: String,
        /// Where the switch is.
        #[command(flatten)]
        switch: crate::config::KillSwitchArgs,
    },
    /// Lift the kill switch.
    Resume {
        /// Where the switch is.
        #[command(flatten)]
        switch: crate::config::KillSwitchArgs,
    },
}

/// `ibkr-mcp spec ...`
#[derive(Debug, Subcommand)]
pub enum SpecCommand {
    /// Write the repaired document (patches and built-in passes applied) as JSON.
    Patch {
        /// IBKR document to repair (JSON or YAML). Default: the document this binary was built
        /// from (the pinned version unless the build set IBKR_OPENAPI_SPEC).
        #[arg(long, value_name = "PATH")]
        spec: Option<PathBuf>,
        /// Patch folder to use instead of the patches built into this binary.
        #[arg(long, value_name = "DIR")]
        patches: Option<PathBuf>,
        /// Where to write the repaired document (`-` for standard output).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print what the repair and the client generation do with a document: version and sha256,
    /// each patch applied/skipped/failed, operations generated and excluded (with reasons),
    /// and the problems our own checks find before and after.
    Report {
        /// IBKR document to report on. Default: the document this binary was built from.
        #[arg(long, value_name = "PATH")]
        spec: Option<PathBuf>,
        /// Patch folder to use instead of the patches built into this binary.
        #[arg(long, value_name = "DIR")]
        patches: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// Compare two IBKR documents (paths, or `pinned`) after repairing both: operations added,
    /// removed and changed (arguments, types, requiredness, content types, reply fields), each
    /// mapped to the tools that use it and marked when it breaks a model's calls; patches that
    /// apply to one and not the other; operations generated or excluded on each side. Exit
    /// code 0: no tool affected; 1: tools affected; 2: error.
    Diff {
        /// The older document (a path, or `pinned`).
        old: String,
        /// The newer document (a path, or `pinned`).
        new: String,
        /// Patch folder to use instead of the patches built into this binary.
        #[arg(long, value_name = "DIR")]
        patches: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
        /// Same as `--format json`.
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
}

/// `spec diff` exit codes: 0 when nothing a tool uses changed, 1 when something did, 2 on
/// error (a document that cannot be read or repaired).
const DIFF_ERROR: u8 = 2;

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// For people.
    Text,
    /// For tools and tests.
    Json,
}

/// Formats of `ibkr-mcp tools`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ToolsFormat {
    /// One line per tool.
    Text,
    /// The README's Markdown table.
    Markdown,
    /// The full definitions (schemas included).
    Json,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Spec(cmd) => run_spec(cmd),
        Command::Halt {
            cancel_orders,
            reason,
            switch,
        } => {
            let ks = crate::halt::KillSwitch::new(crate::config::kill_switch_path(
                switch.kill_switch_file.as_deref(),
            ));
            let halt = ks
                .engage(&reason, cancel_orders)
                .with_context(|| format!("cannot write the kill switch {}", ks.path().display()))?;
            println!(
                "kill switch thrown at {} ({}): every tool that changes anything is refused{}. \
                 Lift it with `ibkr-mcp resume`.",
                halt.since,
                ks.path().display(),
                if cancel_orders {
                    "; working orders are being cancelled by the running server"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume { switch } => {
            let ks = crate::halt::KillSwitch::new(crate::config::kill_switch_path(
                switch.kill_switch_file.as_deref(),
            ));
            let was = ks.release().with_context(|| {
                format!("cannot remove the kill switch {}", ks.path().display())
            })?;
            println!(
                "{} ({})",
                if was {
                    "kill switch lifted: write tools work again"
                } else {
                    "the kill switch was not thrown"
                },
                ks.path().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Tools { format } => {
            let tools = crate::mcp::catalog::all();
            match format {
                ToolsFormat::Json => println!("{}", serde_json::to_string_pretty(tools)?),
                ToolsFormat::Markdown => print!("{}", crate::mcp::catalog::markdown_table(tools)),
                ToolsFormat::Text => {
                    for t in tools {
                        println!(
                            "{:<36} {:<18} {:<11} {} {}",
                            t.name,
                            t.toolset,
                            crate::mcp::catalog::access(t),
                            t.method.map_or("", crate::spec::model::Method::as_str),
                            t.path
                        );
                    }
                }
            }
            for u in crate::mcp::catalog::unavailable() {
                eprintln!("unavailable: {} ({}): {}", u.name, u.operation_id, u.reason);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim(args) => {
            crate::telemetry::init(&args.log, crate::config::LogFormat::Text);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(crate::server::run_sim(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(cfg) => {
            crate::telemetry::init(&cfg.log, cfg.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // Typed deserialization of IBKR's deeply nested replies is stack-hungry.
                .thread_stack_size(8 * 1024 * 1024)
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(crate::server::run(*cfg))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_patches(dir: Option<PathBuf>) -> anyhow::Result<Vec<spec::repair::PatchFile>> {
    match dir {
        Some(d) => spec::repair::load_patches(&d).map_err(anyhow::Error::msg),
        None => Ok(spec::embedded_patches()),
    }
}

#[cfg(feature = "codegen")]
fn report_for(
    path: &std::path::Path,
    patches: Option<PathBuf>,
) -> anyhow::Result<serde_json::Value> {
    let report =
        spec::report_for_file(path, &load_patches(patches)?).map_err(anyhow::Error::msg)?;
    Ok(serde_json::to_value(report)?)
}

#[cfg(not(feature = "codegen"))]
fn report_for(
    _path: &std::path::Path,
    _patches: Option<PathBuf>,
) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!(
        "this binary was built without the `codegen` feature, so it cannot generate a client for \
         another document. `ibkr-mcp spec patch --spec FILE` still repairs it; for the full report \
         rebuild with `cargo build --release --features codegen` (the default), or build the \
         crate with IBKR_OPENAPI_SPEC=FILE and run `ibkr-mcp spec report`."
    )
}

fn run_spec(cmd: SpecCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SpecCommand::Patch {
            spec: path,
            patches,
            out,
        } => {
            let text = match path {
                None if patches.is_none() => spec::REPAIRED_SPEC.to_string(),
                None => anyhow::bail!(
                    "--patches needs --spec (the built-in document is already repaired)"
                ),
                Some(p) => {
                    let bytes = std::fs::read(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?;
                    let repaired = spec::repair::repair(&bytes, &load_patches(patches)?)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                    for o in &repaired.patches {
                        if o.status != spec::repair::PatchStatus::Applied {
                            eprintln!("patch {}: {:?}", o.name, o.status);
                        }
                    }
                    serde_json::to_string_pretty(&repaired.doc)?
                }
            };
            if out.as_os_str() == "-" {
                println!("{text}");
            } else {
                std::fs::write(&out, text)
                    .with_context(|| format!("cannot write {}", out.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SpecCommand::Report {
            spec: path,
            patches,
            format,
        } => {
            let report: serde_json::Value = match path {
                None if patches.is_none() => serde_json::from_str(spec::BUILD_REPORT)?,
                None => anyhow::bail!("--patches needs --spec"),
                Some(p) => report_for(&p, patches)?,
            };
            match format {
                ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                ReportFormat::Text => print!("{}", spec::render_report(&report)),
            }
            Ok(ExitCode::SUCCESS)
        }
        SpecCommand::Diff {
            old,
            new,
            patches,
            format,
            json,
        } => Ok(
            match spec_diff(
                &old,
                &new,
                patches,
                if json { ReportFormat::Json } else { format },
            ) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(DIFF_ERROR)
                }
            },
        ),
    }
}

#[cfg(feature = "codegen")]
fn spec_diff(
    old: &str,
    new: &str,
    patches: Option<PathBuf>,
    format: ReportFormat,
) -> anyhow::Result<ExitCode> {
    let old = spec::diff::resolve_document(old).map_err(anyhow::Error::msg)?;
    let new = spec::diff::resolve_document(new).map_err(anyhow::Error::msg)?;
    let report =
        spec::diff::diff_files(&old, &new, &load_patches(patches)?).map_err(anyhow::Error::msg)?;
    match format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        ReportFormat::Text => print!("{}", spec::diff::render(&report)),
    }
    Ok(if report.affects_tools() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(not(feature = "codegen"))]
fn spec_diff(
    _old: &str,
    _new: &str,
    _patches: Option<PathBuf>,
    _format: ReportFormat,
) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "this binary was built without the `codegen` feature, which `spec diff` needs to tell \
         generated from excluded operations; rebuild with `cargo build --release --features \
         codegen` (the default)"
    )
}
