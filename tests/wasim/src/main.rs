//! Standalone wasim: `cargo run -p wasim -- --listen 127.0.0.1:PORT`.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Loopback WhatsApp Web server for tests and development")]
struct Args {
    /// Address to listen on (chat websocket, admin API and media on one port).
    #[arg(long, default_value = "127.0.0.1:8990")]
    listen: SocketAddr,
    /// Close a connection whose client sent no frame for this many seconds
    /// (as WhatsApp drops clients that miss keepalives). Off by default.
    #[arg(long)]
    idle_timeout_secs: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("wasim=info")),
        )
        .init();
    let args = Args::parse();
    let handle = wasim::Server::start(args.listen).await?;
    handle
        .sim()
        .set_idle_timeout(args.idle_timeout_secs.map(std::time::Duration::from_secs));
    println!("wasim listening on {}", handle.addr());
    println!("  chat websocket: {}", handle.ws_url());
    println!("  admin API:      {}/accounts", handle.admin_url());
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}
