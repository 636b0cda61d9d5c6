//! The `wagate` command line: serve, migrate, projects, devices, and `sign` (prints a
//! ready-to-run signed curl command).

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::process::ExitCode;

use crate::app::{LaunchConfig, launch};
use crate::client;
use crate::config::{DbArgs, ServeArgs};
use crate::crypto::KeySource;
use crate::domain::admin::{Admin, NewProject};
use crate::error::{Error, Result};
use crate::storage::Db;

#[derive(Debug, Parser)]
#[command(
    name = "wagate",
    version,
    about = "Self-hosted WhatsApp messaging gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Nodes with heartbeat age, state (live, draining, dead, stopped) and sessions owned.
    Status {
        #[command(flatten)]
        db: DbArgs,
        /// The lease TTL the nodes run with (judges which are dead), in seconds.
        #[arg(long, env = "WAGATE_LEASE_TTL_SECS", default_value_t = 15)]
        lease_ttl_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// Hand every session of a running node over to the others; it keeps serving API calls.
    Drain {
        #[command(flatten)]
        db: DbArgs,
        node: String,
    },
    /// Let a drained node take sessions again.
    Resume {
        #[command(flatten)]
        db: DbArgs,
        node: String,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway: REST, gRPC and grpc-web on one port.
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Manage projects (tenants with an API key and secret).
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage devices (WhatsApp session slots of a project).
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Print a signed curl command for the REST API.
    Sign(SignArgs),
    /// The nodes sharing the database and the sessions each runs.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Debug, Subcommand)]
enum ProjectCommand {
    /// Create a project; prints its API key and secret (the secret only this once).
    Create {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 60)]
        rate_limit_per_minute: i64,
        #[arg(long, default_value_t = 3000)]
        monthly_quota: i64,
        #[arg(long, default_value_t = 10)]
        max_sessions: i64,
        #[arg(long)]
        json: bool,
    },
    List {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// Turns the replay guard on or off: a request signature already seen within the
    /// signing window is refused (SIGNATURE_REPLAYED). One database write per request.
    ReplayGuard {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        project: String,
        #[arg(long, action = clap::ArgAction::Set)]
        on: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Register a device; prints its device code (X-DEVICE-CODE).
    Create {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        project: String,
        /// e.g. RK-0001; generated when omitted.
        #[arg(long)]
        code: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        project: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct SignArgs {
    #[arg(long, env = "WAGATE_API_KEY")]
    api_key: String,
    #[arg(long, env = "WAGATE_API_SECRET", hide_env_values = true)]
    api_secret: String,
    #[arg(long, default_value = "http://127.0.0.1:8080/api/v1/send")]
    url: String,
    /// GET for status reads.
    #[arg(long, default_value = "POST")]
    method: String,
    #[arg(long)]
    device_code: Option<String>,
    #[arg(long)]
    request_id: Option<String>,
    /// JSON body, e.g. '{"recipient":"6281234567890","type":"text","message":"Hi"}'.
    #[arg(long, conflicts_with = "form")]
    data: Option<String>,
    /// Multipart field `name=value`, or `name=@path` for a file; repeatable.
    #[arg(long)]
    form: Vec<String>,
    /// Where a multipart body is written (curl sends that exact, signed file).
    #[arg(long, default_value = "wagate-request.body")]
    body_file: String,
}

fn open_admin(db: &DbArgs) -> Result<Admin> {
    let (key, source) = db.resolve_master_key()?;
    if let KeySource::GeneratedFile(path) = &source {
        eprintln!("generated a new master key in {path} (keep it: it decrypts the stored secrets)");
    }
    let store = Db::open(&db.database_url, 2)?;
    store.migrate()?;
    Ok(Admin::new(store, key))
}

fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("serializable")
        );
    } else {
        println!("{}", human(value));
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn sign(a: SignArgs) -> Result<()> {
    let ts = client::unix_now();
    let mut headers = vec![
        format!("X-API-KEY: {}", a.api_key),
        format!("X-TIMESTAMP: {ts}"),
    ];
    if let Some(d) = &a.device_code {
        headers.push(format!("X-DEVICE-CODE: {d}"));
    }
    if let Some(r) = &a.request_id {
        headers.push(format!("X-REQUEST-ID: {r}"));
    }
    let (body_arg, body): (Option<String>, Vec<u8>) = if !a.form.is_empty() {
        let mut mp = client::Multipart::new();
        for f in &a.form {
            let (name, value) = f.split_once('=').ok_or_else(|| {
                Error::InvalidRequest(format!("--form expects name=value, got {f}"))
            })?;
            mp = match value.strip_prefix('@') {
                Some(path) => {
                    let data = std::fs::read(path)
                        .map_err(|e| Error::InvalidRequest(format!("cannot read {path}: {e}")))?;
                    let filename = std::path::Path::new(path)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    mp.file(name, &filename, "application/octet-stream", &data)
                }
                None => mp.text(name, value),
            };
        }
        let (content_type, body) = mp.finish();
        std::fs::write(&a.body_file, &body).map_err(Error::internal)?;
        headers.push(format!("Content-Type: {content_type}"));
        (
            Some(format!("--data-binary @{}", shell_quote(&a.body_file))),
            body,
        )
    } else if let Some(d) = a.data {
        headers.push("Content-Type: application/json".into());
        (
            Some(format!("--data-raw {}", shell_quote(&d))),
            d.into_bytes(),
        )
    } else {
        (None, Vec::new())
    };
    headers.push(format!(
        "X-SIGNATURE: {}",
        client::rk_signature(&a.api_key, &a.api_secret, &ts, &body)
    ));
    let mut cmd = format!(
        "curl -sS -X {} {}",
        a.method.to_uppercase(),
        shell_quote(&a.url)
    );
    for h in headers {
        cmd.push_str(&format!(" \\\n  -H {}", shell_quote(&h)));
    }
    if let Some(b) = body_arg {
        cmd.push_str(&format!(" \\\n  {b}"));
    }
    println!("{cmd}");
    Ok(())
}

async fn cluster(c: ClusterCommand) -> Result<()> {
    use crate::storage::cluster::set_draining;
    let (db, node, draining) = match c {
        ClusterCommand::Status {
            db,
            lease_ttl_secs,
            json,
        } => {
            let store = Db::open(&db.database_url, 1)?;
            let ttl = (lease_ttl_secs * 1000) as i64;
            let me = gethostname::gethostname().to_string_lossy().into_owned();
            let v = store
                .run(move |c| crate::domain::cluster::view(c, ttl, &me))
                .await?;
            print(json, &v, |v| {
                let mut out = format!("{} session(s) to run\n", v.sessions_wanted);
                for n in &v.nodes {
                    out.push_str(&format!(
                        "{:<20} {:<9} heartbeat {:>7} ms ago  sessions {}{}  {}  {}\n",
                        n.node_id,
                        n.state.as_str(),
                        n.heartbeat_age_ms,
                        n.sessions_owned,
                        n.max_sessions.map(|m| format!("/{m}")).unwrap_or_default(),
                        n.advertise_url,
                        n.version
                    ));
                }
                out.trim_end().to_owned()
            });
            return Ok(());
        }
        ClusterCommand::Drain { db, node } => (db, node, true),
        ClusterCommand::Resume { db, node } => (db, node, false),
    };
    let store = Db::open(&db.database_url, 1)?;
    let n = node.clone();
    if !store.run(move |c| set_draining(c, &n, draining)).await? {
        return Err(Error::NodeNotFound);
    }
    println!(
        "node {node} {}",
        if draining {
            "drains: it hands its sessions over within a few seconds"
        } else {
            "takes sessions again"
        }
    );
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<()> {
    let (key, source) = args.db.resolve_master_key()?;
    match &source {
        KeySource::Environment => tracing::info!("master key from WAGATE_MASTER_KEY"),
        KeySource::ExistingFile(p) => tracing::info!(file = %p, "master key from key file"),
        KeySource::GeneratedFile(p) => {
            tracing::warn!(file = %p, "generated a new master key; back it up: it decrypts the stored secrets")
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Error::Unavailable(format!("cannot listen on {}: {e}", args.listen)))?;
    let server = launch(
        LaunchConfig {
            connector: args.connector()?,
            database_url: args.db.database_url.clone(),
            master_key: key,
            settings: args.settings(),
            db_pool_size: args.db_pool_size,
            writer: None,
        },
        listener,
    )
    .await?;
    server.run_until(shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(db) => {
            let store = Db::open(&db.database_url, 2)?;
            let n = store.migrate()?;
            println!("applied {n} migration(s)");
            Ok(())
        }
        Command::Project(ProjectCommand::Create {
            db,
            name,
            rate_limit_per_minute,
            monthly_quota,
            max_sessions,
            json,
        }) => {
            let p = open_admin(&db)?
                .create_project(NewProject {
                    name,
                    rate_limit_per_minute,
                    monthly_quota,
                    max_sessions,
                })
                .await?;
            print(json, &p, |p| {
                format!(
                    "project_id: {}\napi_key:    {}\napi_secret: {}\n(the API secret is shown only this once)",
                    p.project_id, p.api_key, p.api_secret
                )
            });
            Ok(())
        }
        Command::Project(ProjectCommand::ReplayGuard { db, project, on }) => {
            open_admin(&db)?.set_refuse_replays(&project, on).await?;
            println!(
                "replay guard {} for project {project}",
                if on { "on" } else { "off" }
            );
            Ok(())
        }
        Command::Project(ProjectCommand::List { db, json }) => {
            let list = open_admin(&db)?.list_projects().await?;
            print(json, &list, |l| {
                l.iter()
                    .map(|p| {
                        format!(
                            "{}  {}  key {}…  {}/min  {}/month",
                            p.project_id,
                            p.name,
                            p.api_key_prefix,
                            p.rate_limit_per_minute,
                            p.monthly_quota
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        Command::Device(DeviceCommand::Create {
            db,
            project,
            code,
            name,
            json,
        }) => {
            let d = open_admin(&db)?.create_device(&project, code, name).await?;
            print(json, &d, |d| {
                format!(
                    "device_id:   {}\ndevice_code: {}",
                    d.device_id, d.device_code
                )
            });
            Ok(())
        }
        Command::Device(DeviceCommand::List { db, project, json }) => {
            let list = open_admin(&db)?.list_devices(&project).await?;
            print(json, &list, |l| {
                l.iter()
                    .map(|d| {
                        format!(
                            "{}  {}  {}  {}",
                            d.device_code, d.device_id, d.name, d.state
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        Command::Sign(a) => sign(a),
        Command::Cluster(c) => cluster(c).await,
    }
}

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wagate=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: {}",
                match &e {
                    Error::Internal(d) | Error::Unavailable(d) => d.clone(),
                    other => other.to_string(),
                }
            );
            ExitCode::FAILURE
        }
    }
}
