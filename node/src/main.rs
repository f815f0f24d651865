use clap::Parser;
use keyraft_node::config::Config;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYRAFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = Config::parse();
    if let Err(e) = keyraft_node::server::run(cfg).await {
        eprintln!("keyraft-node: {e:#}");
        std::process::exit(1);
    }
}
