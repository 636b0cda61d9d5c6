//! Sessions benchmark: N idle connected WhatsApp sessions against wasim (the loopback
//! WhatsApp server, in this process). The gateway runs as its own process (`wagate serve
//! --whatsapp-url`, built with the `simulator` feature), so the RSS read from
//! `/proc/<pid>/status` is the gateway's alone. Prints:
//!
//! - the gateway's RSS with 0 sessions (baseline) and with N idle connected sessions, and
//!   (RSS − baseline) / N per session (target: ≤ 0.3 MiB at N = 10,000);
//! - the CPU the gateway uses while its N sessions idle, in % of one core (target < 2 %: no
//!   per-session timer or task wakes when nothing happens);
//! - the time from starting the gateway again on the same database until all N sessions
//!   report connected (target: 10,000 sessions in under 30 s).
//!
//! ```text
//! cargo bench --bench sessions --features simulator -- [--sessions 200] [--concurrency 16] [--idle 5]
//! ```
//!
//! N up to 20,000 (the process needs two file descriptors per session: `ulimit -n`).
//!
//! PostgreSQL too when WAGATE_BENCH_DATABASE_URL is set, e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres` (a scratch database is created and dropped).
//! WAGATE_BENCH_LOG is the gateway's RUST_LOG (default `warn`); when set, the gateway's log is
//! kept in the temp directory as `wagate-bench-sessions-<backend>.log`.
//!
//! Note on the restore time: whatsapp-rust treats a login with no stored push name as a fresh
//! pairing and waits up to 10 s (`KEY_SHARE_GRACE_SECS`) for an app-state key share. Like a real
//! phone, wasim's app state gives each new device the account's push name (`setting_pushName`
//! in `critical_block`), which the device store persists, so restored sessions skip that wait.
//!
//! Everything runs on loopback, every wait is bounded, and the gateway process is killed when
//! the benchmark ends, fails or panics.

// A benchmark, not product code: a panic is its failure report.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/linked.rs"]
mod linked;
#[path = "common/process.rs"]
mod process;

use common::{ScratchPg, flag};
use futures::StreamExt;
use linked::{Gateway, Project, Sessions, create_project, link, signed};
use std::time::{Duration, Instant};
use wagate::proto::v1::{ListSessionsRequest, SessionState};

const SVC: &str = "wagate.v1.SessionsService";

struct Opts {
    sessions: usize,
    concurrency: usize,
    idle: u64,
}

fn opts() -> Opts {
    Opts {
        sessions: flag("--sessions", 200).clamp(1, 20_000) as usize,
        concurrency: flag("--concurrency", 16).clamp(1, 256) as usize,
        idle: flag("--idle", 5).clamp(1, 600),
    }
}

/// (VmRSS, RssAnon) of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// CPU time (user + system) a process used so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name (which may hold spaces, so split after its ')').
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the comm.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Clock ticks per second (`getconf CLK_TCK`); 100 on Linux unless told otherwise.
fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

/// Number of the project's sessions that report connected since `since` (Unix ms), and the
/// total. A session not yet started by this process answers the state stored before the
/// restart (often "connected"), so the state alone does not prove a reconnect: the
/// connection must also be newer than the process.
async fn connected(c: &mut Sessions, p: &Project, since: i64) -> Option<(usize, usize)> {
    let l = c
        .list_sessions(signed(
            p,
            SVC,
            "ListSessions",
            ListSessionsRequest::default(),
        ))
        .await
        .ok()?
        .into_inner();
    let n = l
        .sessions
        .iter()
        .filter(|s| {
            s.state == SessionState::Connected as i32
                && s.last_connected_at
                    .as_ref()
                    .is_some_and(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000 >= since)
        })
        .count();
    Some((n, l.sessions.len()))
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

struct Figures {
    baseline_kib: u64,
    loaded_kib: u64,
    per_session_kib: f64,
    idle_cpu: f64,
    restore: Duration,
}

async fn run_backend(
    label: &str,
    db_url: &str,
    o: &Opts,
    sim: &wasim::ServerHandle,
    phones: &str,
) -> Figures {
    let n = o.sessions;
    let dir = tempfile::tempdir().unwrap();
    // With WAGATE_BENCH_LOG (the gateway's RUST_LOG) the log is kept for reading afterwards.
    let log = match std::env::var("WAGATE_BENCH_LOG") {
        Ok(_) => std::env::temp_dir().join(format!("wagate-bench-sessions-{label}.log")),
        Err(_) => dir.path().join("gateway.log"),
    };
    let _ = std::fs::remove_file(&log);
    let key = hex::encode(wagate::crypto::random_bytes::<32>());
    let ws_url = sim.ws_url();
    let admin = wasim::client::Admin::new(sim.addr());
    let max = (n + 10).to_string();
    let project = create_project(db_url, &key, "bench-sessions", &["--max-sessions", &max]);

    // Baseline: the gateway up, migrated, serving, with no session.
    let mut gw = Gateway::spawn(db_url, &key, &ws_url, &[], &log);
    let mut c = gw.connect().await;
    connected(&mut c, &project, 0).await.expect("ListSessions");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (baseline, baseline_anon) = rss_kib(gw.pid());
    println!(
        "[{label}] baseline (0 sessions): RSS {:.1} MiB (anon {:.1} MiB)",
        mib(baseline as f64),
        mib(baseline_anon as f64)
    );

    // Link N sessions, `concurrency` at a time.
    let t0 = Instant::now();
    let mut times: Vec<Duration> = futures::stream::iter(0..n)
        .map(|i| {
            let phone = format!("{phones}{i:05}");
            let (c, project, admin) = (c.clone(), &project, &admin);
            async move { link(c, project, admin, i, phone).await.1 }
        })
        .buffer_unordered(o.concurrency)
        .collect()
        .await;
    let link_all = t0.elapsed();
    times.sort_unstable();
    gw.check_alive();
    println!(
        "[{label}] linked {n} sessions in {:.1} s ({} at a time; per session p50 {:.2} s, p99 {:.2} s)",
        link_all.as_secs_f64(),
        o.concurrency,
        percentile(&times, 0.5).as_secs_f64(),
        percentile(&times, 0.99).as_secs_f64()
    );
    let (up, total) = connected(&mut c, &project, 0).await.expect("ListSessions");
    assert_eq!((up, total), (n, n), "all sessions connected");

    // Idle, then measure: the CPU the process used over the idle window (after a settling
    // second for the last links' follow-up work), then its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ticks0, t_idle) = (cpu_ticks(gw.pid()), Instant::now());
    tokio::time::sleep(Duration::from_secs(o.idle)).await;
    let idle_cpu =
        (cpu_ticks(gw.pid()) - ticks0) as f64 / clk_tck() / t_idle.elapsed().as_secs_f64() * 100.0;
    println!(
        "[{label}] {n} idle connected sessions: gateway CPU {idle_cpu:.2} % of one core over {} s (target < 2 %)",
        o.idle
    );
    let (up, _) = connected(&mut c, &project, 0).await.expect("ListSessions");
    assert_eq!(up, n, "all sessions still connected after idling");
    let (loaded, loaded_anon) = rss_kib(gw.pid());
    let per = (loaded.saturating_sub(baseline)) as f64 / n as f64;
    println!(
        "[{label}] {n} idle connected sessions ({} s idle): RSS {:.1} MiB (anon {:.1} MiB); \
         (RSS - baseline) / N = {:.0} KiB = {:.3} MiB per session (target <= 0.3 MiB)",
        o.idle,
        mib(loaded as f64),
        mib(loaded_anon as f64),
        per,
        mib(per)
    );

    // Restart on the same database: time until every session reports connected again.
    drop(c);
    let stopped = gw.stop();
    println!(
        "[{label}] gateway stopped (SIGTERM) in {:.2} s",
        stopped.as_secs_f64()
    );
    let restart_ms = unix_ms();
    let mut gw = Gateway::spawn(db_url, &key, &ws_url, &[], &log);
    let mut c = gw.connect().await;
    let listening = gw.started.elapsed();
    let deadline = Duration::from_secs(120.max(n as u64 / 50));
    let restore = loop {
        gw.check_alive();
        if let Some((up, _)) = connected(&mut c, &project, restart_ms).await {
            if up == n {
                break gw.started.elapsed();
            }
            assert!(
                gw.started.elapsed() < deadline,
                "only {up}/{n} sessions connected {} s after the restart; gateway log:\n{}",
                deadline.as_secs(),
                gw.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    println!(
        "[{label}] restart: listening after {:.2} s, {n} sessions restored and connected {:.2} s \
         after process start (target < 30 s at N = 10,000)",
        listening.as_secs_f64(),
        restore.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(o.idle)).await;
    let (restored, restored_anon) = rss_kib(gw.pid());
    println!(
        "[{label}] after restore + {} s idle: RSS {:.1} MiB (anon {:.1} MiB); \
         (RSS - first baseline) / N = {:.2} MiB per session",
        o.idle,
        mib(restored as f64),
        mib(restored_anon as f64),
        mib(restored.saturating_sub(baseline) as f64 / n as f64)
    );
    drop(c);
    gw.stop();
    Figures {
        baseline_kib: baseline,
        loaded_kib: loaded,
        per_session_kib: per,
        idle_cpu,
        restore,
    }
}

fn summary(label: &str, n: usize, f: &Figures) {
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "SUMMARY {label}: N={n} baseline {:.1} MiB, loaded {:.1} MiB, {:.3} MiB/session [{}], \
         idle CPU {:.2} % [{}], restore {:.2} s [{}]{}",
        mib(f.baseline_kib as f64),
        mib(f.loaded_kib as f64),
        mib(f.per_session_kib),
        mark(f.per_session_kib <= 0.3 * 1024.0),
        f.idle_cpu,
        mark(f.idle_cpu < 2.0),
        f.restore.as_secs_f64(),
        mark(f.restore < Duration::from_secs(30)),
        if n == 10_000 {
            ""
        } else {
            " (targets are stated for N = 10,000)"
        }
    );
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "wagate sessions benchmark: N = {} sessions, {} linked at a time, {} s idle, {} CPUs, \
             loopback, wasim in-process, gateway as its own process",
            o.sessions,
            o.concurrency,
            o.idle,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        // One wasim for all runs; each backend links its own phone numbers.
        let sim = wasim::Server::start("127.0.0.1:0".parse().unwrap())
            .await
            .expect("wasim");

        let dir = tempfile::tempdir().unwrap();
        let sqlite = dir.path().join("bench.db").to_string_lossy().into_owned();
        let f = run_backend("sqlite", &sqlite, &o, &sim, "1555020").await;
        summary("sqlite", o.sessions, &f);

        if let Some(pg) = ScratchPg::from_env(&["WAGATE_BENCH_DATABASE_URL"]) {
            let f = run_backend("postgres", &pg.url, &o, &sim, "1555021").await;
            summary("postgres", o.sessions, &f);
        }
        sim.shutdown().await;
    });
}
