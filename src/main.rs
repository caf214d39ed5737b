//! The `ibkr-mcp` binary: parses the command line and runs it.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = ibkr_mcp::cli::Cli::parse();
    match ibkr_mcp::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
