//! Broadcast benchmark: the three costs of a large campaign, measured inside a real gateway
//! (the domain calls every surface makes), on SQLite (temp file) and, when a URL is given,
//! PostgreSQL.
//!
//! 1. Import: a `--contacts`-row CSV streamed in 64 KiB chunks the way an upload arrives
//!    (`contacts::spool`, then `import_contact_list`), until the list is `success`. Reference
//!    in the same run: the same file read row by row with the `csv` crate and nothing else.
//! 2. Expansion: a campaign over that list created (every recipient row written by its one
//!    `INSERT … SELECT`), scheduled ahead so nothing dispatches, then cancelled.
//! 3. Scheduler: `--sessions` sessions (not linked: messages stay queued) and campaigns of
//!    `--per-session` recipients per session with no pacing gap; time and the process's CPU
//!    until the dispatchers handed every recipient to the outbound queue. Then the same again
//!    with the default pacing, so all but one recipient per session is held: the process's CPU
//!    while the scheduler waits (`--idle` seconds).
//!
//! Peak RSS growth is the process's high-water mark (`VmHWM`, reset through
//! `/proc/self/clear_refs`) minus its RSS before the phase. Figures are printed, never
//! asserted; everything runs in-process on loopback and every wait is bounded.
//!
//!   cargo bench --bench broadcasts -- [--contacts 100000] [--sessions 100]
//!                                     [--per-session 1000] [--idle 10]
//!   (PostgreSQL: WAGATE_BENCH_DATABASE_URL or WAGATE_TEST_DATABASE_URL, e.g.
//!    postgres://postgres@127.0.0.1:5432/postgres — a scratch database is created and dropped)
//!
//! Targets (issue 10): import < 10 s, expansion < 5 s, RSS growth < 100 MB.

// A benchmark, not product code: a panic is its failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ScratchPg, flag};
use tokio::net::TcpListener;
use wagate::app::{LaunchConfig, Server, launch};
use wagate::crypto::MasterKey;
use wagate::domain::Settings;
use wagate::domain::admin::NewProject;
use wagate::domain::auth::Caller;
use wagate::domain::broadcasts::campaigns::{
    BroadcastAction, BroadcastSpec, BroadcastView, Mapping, Pacing, Target,
};
use wagate::domain::broadcasts::contacts::{ContactListView, spool};
use wagate::domain::broadcasts::model::{TemplateSpec, Variant};
use wagate::domain::broadcasts::pacing::PolicyPatch;
use wagate::values::{ContactListId, ProjectId, TemplateId};

struct Opts {
    contacts: u64,
    sessions: usize,
    per_session: u64,
    idle: u64,
}

fn opts() -> Opts {
    Opts {
        contacts: flag("--contacts", 100_000).clamp(1_000, 200_000),
        sessions: flag("--sessions", 100).clamp(2, 1_000) as usize,
        per_session: flag("--per-session", 1_000).clamp(1, 10_000),
        idle: flag("--idle", 10).clamp(1, 120),
    }
}

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the high-water mark of RSS to the current RSS, and returns that RSS (KiB).
fn reset_peak() -> u64 {
    // "5" resets VmHWM (Linux ≥ 4.0); without it the growth printed is an upper bound.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:")
}

/// Peak RSS since `reset_peak` minus the RSS it returned, in MiB.
fn peak_growth_mib(base_kib: u64) -> f64 {
    status_kib("VmHWM:").saturating_sub(base_kib) as f64 / 1024.0
}

/// CPU time of the whole process (user + system), from `/proc/self/stat` (USER_HZ = 100).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(14) + ticks(15)) as f64 / 100.0
}

/// A CSV of `n` contacts (numbers `first..first + n`) with two variable columns.
fn write_csv(path: &Path, first: u64, n: u64) {
    let mut w = BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(w, "phone_number,full_name,customer_name,company").unwrap();
    for i in first..first + n {
        writeln!(w, "62812{i:08},Name {i},Customer {i},Company {}", i % 97).unwrap();
    }
    w.flush().unwrap();
}

/// The reference: the same file read row by row, nothing stored.
fn parse_only(path: &Path) -> (u64, Duration) {
    let t = Instant::now();
    let mut r = csv::Reader::from_path(path).unwrap();
    let mut rec = csv::StringRecord::new();
    let mut n = 0;
    while r.read_record(&mut rec).unwrap() {
        n += u64::from(!rec.get(0).unwrap_or("").is_empty());
    }
    (n, t.elapsed())
}

/// The file as an upload's chunks (64 KiB each).
fn chunks(path: &Path) -> impl futures::Stream<Item = wagate::error::Result<Bytes>> + Unpin {
    let mut f = std::fs::File::open(path).unwrap();
    let mut parts = Vec::new();
    loop {
        let mut buf = vec![0u8; 64 * 1024];
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        buf.truncate(n);
        parts.push(Ok(Bytes::from(buf)));
    }
    futures::stream::iter(parts)
}

async fn start(url: &str, sessions: usize) -> (Server, Caller) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = launch(
        LaunchConfig {
            connector: None,
            database_url: url.to_owned(),
            master_key: MasterKey::generate(),
            settings: Settings {
                node_id: "bench".into(),
                default_country_code: "62".into(),
                ..Settings::default()
            },
            db_pool_size: 16,
            writer: None,
        },
        listener,
    )
    .await
    .expect("gateway starts");
    let admin = server.gateway.admin();
    let p = admin
        .create_project(NewProject {
            name: "bench".into(),
            rate_limit_per_minute: i64::MAX / 4,
            monthly_quota: i64::MAX / 4,
            max_sessions: sessions as i64,
        })
        .await
        .expect("project");
    for _ in 0..sessions {
        admin
            .create_device(&p.project_id, None, None)
            .await
            .expect("session");
    }
    let caller = server
        .gateway
        .caller_for_project(&ProjectId::from(p.project_id))
        .await
        .expect("caller");
    // The sessions are new and never talked to anyone: without this the warm-up and the
    // new-contact cap would hold all but a few dozen recipients a session, and the figures
    // would be the policy's, not the scheduler's. The gap stays the default.
    server
        .gateway
        .update_send_policy(
            &caller,
            PolicyPatch {
                daily_cap: Some(0),
                new_contact_cap: Some(0),
                warmup_days: Some(0),
                typing: Some(false),
                ..PolicyPatch::default()
            },
        )
        .await
        .expect("send policy");
    (server, caller)
}

/// Imports `path`; waits (bounded) for the list to finish.
async fn import(server: &Server, caller: &Caller, name: &str, path: &Path) -> ContactListView {
    let gw = &server.gateway;
    let spooled = spool(chunks(path)).await.expect("spooled");
    let made = gw
        .import_contact_list(caller, name, "spreadsheet", spooled)
        .await
        .expect("import starts");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let l = gw.get_contact_list(caller, &made.id).await.expect("list");
        if l.progress != "processing" {
            return l;
        }
        assert!(Instant::now() < deadline, "import did not finish in 300 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn template(server: &Server, caller: &Caller) -> TemplateId {
    server
        .gateway
        .create_template(
            caller,
            TemplateSpec {
                name: format!("bench-{}", uuid::Uuid::new_v4()),
                category: "MARKETING".into(),
                variants: vec![Variant {
                    language: "id".into(),
                    header: None,
                    body: "Hi {{1}} from {{2}}, your order is ready.".into(),
                    footer: "Reply STOP to opt out".into(),
                    buttons: Vec::new(),
                }],
            },
        )
        .await
        .expect("template")
        .id
}

fn list_spec(
    template_id: &TemplateId,
    list: &ContactListId,
    sessions: Vec<String>,
    send_at: Option<i64>,
    pacing: Pacing,
) -> BroadcastSpec {
    BroadcastSpec {
        name: "bench".into(),
        template_id: template_id.clone(),
        language: "id".into(),
        session_ids: sessions,
        target: Target::List {
            contact_list_id: list.clone(),
        },
        mapping: Mapping {
            body: vec!["full_name".into(), "company".into()],
            ..Mapping::default()
        },
        send_at,
        pacing,
    }
}

/// Waits until no recipient of `ids` is left to hand over; bounded by `limit`.
async fn handed_over(server: &Server, caller: &Caller, ids: &[BroadcastView], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut left = 0;
        for b in ids {
            let v = server
                .gateway
                .get_broadcast(caller, &b.row.id)
                .await
                .unwrap();
            left += v.counts.created;
        }
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} recipients not handed over in {limit:?}"
        );
        // Counting is itself a query over every recipient: not so often that it is what
        // the CPU figure measures.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn run_backend(label: &str, url: &str, o: &Opts, dir: &Path) {
    println!("-- {label}");
    let (server, caller) = start(url, o.sessions).await;
    let gw = server.gateway.clone();
    let sessions: Vec<String> = gw
        .list_sessions(&caller)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.session_id.into_string())
        .collect();
    let tpl = template(&server, &caller).await;

    // 1. Import.
    let big = dir.join("contacts.csv");
    write_csv(&big, 0, o.contacts);
    let (parsed, parse_time) = parse_only(&big);
    let base = reset_peak();
    let t = Instant::now();
    let list = import(&server, &caller, "bench", &big).await;
    let took = t.elapsed();
    println!(
        "import      {} rows → {} ({} accepted) in {:.2} s ({:.0} rows/s)   peak RSS growth {:.1} MiB   reference: csv parse alone {:.3} s ({} rows)",
        o.contacts,
        list.progress,
        list.accepted,
        took.as_secs_f64(),
        o.contacts as f64 / took.as_secs_f64(),
        peak_growth_mib(base),
        parse_time.as_secs_f64(),
        parsed
    );

    // 2. Expansion (scheduled ahead: nothing dispatches).
    let ahead = Some(wagate::storage::now_ms() + 2 * 3600 * 1000);
    let base = reset_peak();
    let t = Instant::now();
    let b = gw
        .create_broadcast(
            &caller,
            list_spec(
                &tpl,
                &list.id,
                sessions[..1].to_vec(),
                ahead,
                Pacing::default(),
            ),
        )
        .await
        .expect("campaign");
    let took = t.elapsed();
    println!(
        "expansion   {} recipients in {:.2} s   peak RSS growth {:.1} MiB",
        b.row.recipients_total,
        took.as_secs_f64(),
        peak_growth_mib(base)
    );
    gw.change_broadcast(&caller, &b.row.id, BroadcastAction::Cancel)
        .await
        .expect("cancel");

    // 3. Scheduler: sessions × per_session recipients, in campaigns of at most 50 sessions.
    let per_campaign = 50.min(o.sessions);
    let groups: Vec<Vec<String>> = sessions
        .chunks(per_campaign)
        .map(<[String]>::to_vec)
        .collect();
    let mut lists = Vec::new();
    for (g, s) in groups.iter().enumerate() {
        let path = dir.join(format!("group-{g}.csv"));
        let n = s.len() as u64 * o.per_session;
        write_csv(&path, 10_000_000 * (g as u64 + 1), n);
        lists.push(
            import(&server, &caller, &format!("group {g}"), &path)
                .await
                .id,
        );
    }
    let total = o.sessions as u64 * o.per_session;
    let unpaced = Pacing {
        min_ms: Some(0),
        max_ms: Some(0),
        daily_cap: Some(0),
    };
    let base = reset_peak();
    let (t, cpu) = (Instant::now(), cpu_secs());
    let mut running = Vec::new();
    for (s, l) in groups.iter().zip(&lists) {
        running.push(
            gw.create_broadcast(&caller, list_spec(&tpl, l, s.clone(), None, unpaced))
                .await
                .unwrap(),
        );
    }
    handed_over(&server, &caller, &running, Duration::from_secs(600)).await;
    let (took, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - cpu);
    println!(
        "dispatch    {} sessions × {} = {total} recipients handed to the outbound queue in {took:.2} s ({:.0}/s)   process CPU {cpu:.2} s ({:.0} µs per recipient)   peak RSS growth {:.1} MiB",
        o.sessions,
        o.per_session,
        total as f64 / took,
        cpu * 1e6 / total as f64,
        peak_growth_mib(base)
    );

    // The same recipients again with the default pacing: all but the first of each session
    // are held. The process's CPU while the scheduler waits.
    let mut held = Vec::new();
    for (s, l) in groups.iter().zip(&lists) {
        held.push(
            gw.create_broadcast(
                &caller,
                list_spec(&tpl, l, s.clone(), None, Pacing::default()),
            )
            .await
            .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (t, cpu) = (Instant::now(), cpu_secs());
    tokio::time::sleep(Duration::from_secs(o.idle)).await;
    let (took, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - cpu);
    let mut waiting = 0;
    for b in &held {
        let v = gw.get_broadcast(&caller, &b.row.id).await.unwrap();
        waiting += v.counts.created + v.counts.pending;
    }
    println!(
        "held        {waiting} recipients waiting on pacing over {} sessions: process CPU {:.2} % of one core over {took:.1} s",
        o.sessions,
        cpu * 100.0 / took
    );
    for b in held {
        gw.change_broadcast(&caller, &b.row.id, BroadcastAction::Cancel)
            .await
            .unwrap();
    }
    server.shutdown().await;
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "wagate broadcast benchmark: {} CPUs, gateway in-process; {} contacts; {} sessions × {} recipients",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            o.contacts,
            o.sessions,
            o.per_session
        );
        println!(
            "  targets: import < 10 s, expansion < 5 s, peak RSS growth < 100 MB (printed, not asserted)"
        );
        let dir = tempfile::tempdir().unwrap();
        let sqlite = dir.path().join("bench.db").to_string_lossy().into_owned();
        run_backend("sqlite (temp file)", &sqlite, &o, dir.path()).await;
        if let Some(pg) =
            ScratchPg::from_env(&["WAGATE_BENCH_DATABASE_URL", "WAGATE_TEST_DATABASE_URL"])
        {
            run_backend("postgres", &pg.url, &o, dir.path()).await;
        }
    });
    rt.shutdown_timeout(Duration::from_secs(5));
}
