//! `pinsight status`: per VM and vCPU, where it ran (local / same socket / remote), from a
//! running daemon's /status.json.

use clap::Args;

use super::{fetch_status, print_json, CliError};

/// Arguments of `pinsight status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The daemon's address (host:port).
    #[arg(long, default_value = "127.0.0.1:9812")]
    pub addr: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the daemon's view of every VM.
pub fn execute(args: StatusArgs) -> Result<(), CliError> {
    let status = fetch_status(&args.addr)?;
    if args.json {
        print_json(&status)
    } else {
        print!("{}", super::render::status(&status));
        Ok(())
    }
}
