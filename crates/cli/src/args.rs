//! The command line: the top-level parser and its subcommands. Serving flags live in
//! `serve_args.rs`.

use clap::Parser;

pub(crate) use crate::serve_args::{Listen, ServeArgs};

/// exec-server: run processes, touch files and make HTTP calls for an AI agent harness, over
/// JSON-RPC on a WebSocket or stdio. Wire-compatible with `codex exec-server`.
///
/// With no subcommand it serves (the flags below); client commands are subcommands.
#[derive(Debug, Parser)]
#[command(name = "exec-server", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    /// Serving flags (the default command).
    #[command(flatten)]
    pub(crate) serve: ServeArgs,

    /// Log format on stderr (`RUST_LOG` sets the level).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,

    /// A client command instead of serving.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands (client commands and helpers). Serving stays the default.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Run a command on an executor, like ssh: its stdout and stderr come back on yours, your
    /// stdin goes to it, Ctrl-C interrupts it, and its exit code becomes yours.
    #[command(after_help = crate::cmd::run::EXAMPLES)]
    Run(crate::cmd::run::RunArgs),
    /// Open an interactive shell on an executor in a pseudo-terminal (resizes follow yours).
    #[command(after_help = crate::cmd::shell::EXAMPLES)]
    Shell(crate::cmd::shell::ShellArgs),
    /// Copy files and directories to or from an executor; remote paths start with `:`.
    #[command(after_help = crate::cmd::cp::EXAMPLES)]
    Cp(crate::cmd::cp::CpArgs),
    /// Print what an executor reports about itself (environmentInfo) as JSON.
    #[command(after_help = crate::cmd::info::EXAMPLES)]
    Info(crate::cmd::info::InfoArgs),
    /// List the tools of a Streamable HTTP MCP server reached from an executor, or call one.
    #[command(after_help = crate::cmd::mcp::EXAMPLES)]
    Mcp(crate::cmd::mcp::McpArgs),
    /// Serve MCP: a `shell` tool whose every exec, nested ones included, is checked against
    /// execpolicy rules (prompts become elicitations), and file tools (docs/mcp-serve.md).
    #[command(after_help = crate::cmd::mcp_serve::EXAMPLES)]
    McpServe(crate::cmd::mcp_serve::McpServeArgs),
    /// Serve the open registry + rendezvous of remote mode: executors register and keep one
    /// socket, harnesses connect through it (docs/remote.md).
    #[command(after_help = crate::cmd::rendezvous::EXAMPLES)]
    Rendezvous(crate::cmd::rendezvous::RendezvousArgs),
    /// Register an existing WebSocket exec-server as a remote environment: every stream a
    /// harness opens through the rendezvous is relayed to it.
    Forward(crate::remote_args::ForwardArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
