//! The gateway as its own process, for the benchmarks that measure it from outside (RSS,
//! restarts, hostile traffic): started on a free loopback port, its output in a log file.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const GATEWAY: &str = env!("CARGO_BIN_EXE_wagate");

pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback port");
    l.local_addr().unwrap()
}

/// `wagate serve` on a free port with the given database, key and extra flags; the log level
/// comes from `WAGATE_BENCH_LOG` (default warn).
pub fn spawn_gateway(db_url: &str, key: &str, extra: &[&str], log: &Path) -> (Child, SocketAddr) {
    let addr = free_port();
    (spawn_gateway_on(addr, db_url, key, extra, log), addr)
}

/// [`spawn_gateway`] on a given address (a node of a cluster that advertises its port, or
/// one restarted on the port it had).
pub fn spawn_gateway_on(
    addr: SocketAddr,
    db_url: &str,
    key: &str,
    extra: &[&str],
    log: &Path,
) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("gateway log");
    Command::new(GATEWAY)
        .args(["serve", "--listen", &addr.to_string()])
        .args(["--database-url", db_url, "--master-key", key])
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("WAGATE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log handle"))
        .stderr(out)
        .spawn()
        .expect(
            "start the gateway (sessions and failover benches: built with --features simulator?)",
        )
}

/// The last 40 lines of a log, for a failure message.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
