use clap::Parser;
use keyraft_api::logging::{self, LogFormat};
use keyraft_node::config::Config;

/// The node's flags plus how it logs (the filter is `RUST_LOG`).
#[derive(Parser)]
#[command(
    name = "keyraft-node",
    version,
    about = "A Keyraft database node: partitioned, Raft-replicated key-value storage"
)]
struct Cli {
    #[command(flatten)]
    cfg: Config,
    /// Log records as `text` or `json` (one object per line).
    #[arg(long, env = "KEYRAFT_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    logging::init(cli.log_format, "info,openraft=warn");
    if let Err(e) = keyraft_node::server::run(cli.cfg).await {
        eprintln!("keyraft-node: {e:#}");
        std::process::exit(1);
    }
}
