//! The test's own database: a SQLite file in a temp dir, or, when WAGATE_TEST_DATABASE_URL
//! is set, a PostgreSQL database cloned from a template migrated once per test process.
//!
//! The template is `wagate_tpl_<pid>_<migrations hash>`; each clone is
//! `wagate_it_<pid>_<n>` and is dropped with its `TestDb`. The template outlives the process
//! (nothing runs at exit), as do the clones of a process that was killed: the next process
//! sweeps every such database whose pid no longer runs.

use diesel::{Connection, PgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use wagate::storage::{Db, DbConn};

pub const PG_ENV: &str = "WAGATE_TEST_DATABASE_URL";

pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    /// The clone this handle owns and drops: (server URL, database name).
    pg: Option<(String, String)>,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = dir.path().join("wagate.db").to_string_lossy().into_owned();
        TestDb {
            url,
            _dir: Some(dir),
            pg: None,
        }
    }

    /// An existing SQLite file the caller owns.
    pub fn sqlite_at(url: String) -> TestDb {
        TestDb {
            url,
            _dir: None,
            pg: None,
        }
    }

    /// A migrated database of its own on the server named by WAGATE_TEST_DATABASE_URL;
    /// `None` (skipped) when it is unset, except in CI where that is a failure.
    pub fn postgres() -> Option<TestDb> {
        let Ok(server) = std::env::var(PG_ENV) else {
            assert!(std::env::var("CI").is_err(), "{PG_ENV} must be set in CI");
            eprintln!("skipped: {PG_ENV} is not set");
            return None;
        };
        let template = Template::get(&server);
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "wagate_it_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = PgConnection::establish(&server).expect("connect to PostgreSQL");
        diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {}", template.name))
            .execute(&mut conn)
            .expect("clone the template database");
        Some(TestDb {
            url: database_url(&server, &name),
            _dir: None,
            pg: Some((server, name)),
        })
    }

    /// The same database, for a second node; the original keeps ownership (and cleanup).
    pub fn shared(&self) -> TestDb {
        TestDb {
            url: self.url.clone(),
            _dir: None,
            pg: None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }

    /// A handle on the database beside the server's (its tables exist once a server ran).
    pub fn open(&self) -> Db {
        Db::open(&self.url, 2).expect("open the test database")
    }

    /// A handle on the database with the schema in place, for tests without a server.
    pub fn migrated(&self) -> Db {
        let db = Db::open(&self.url, 4).expect("open the test database");
        db.migrate().expect("migrate the test database");
        db
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = &self.pg
            && let Ok(mut conn) = PgConnection::establish(server)
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn);
        }
    }
}

/// The database every clone of this process is made from.
struct Template {
    name: String,
}

impl Template {
    fn get(server: &str) -> &'static Template {
        static TEMPLATE: OnceLock<Template> = OnceLock::new();
        TEMPLATE.get_or_init(|| Template::create(server))
    }

    /// Creates and migrates this process's template, and sweeps what dead processes left
    /// on a thread of its own (a `DROP DATABASE` can take seconds; no test waits for it).
    /// No connection to the template stays open: PostgreSQL clones only a database nobody
    /// is in.
    fn create(server: &str) -> Template {
        let mut conn = PgConnection::establish(server).expect("connect to PostgreSQL");
        let sweeper = server.to_owned();
        std::thread::spawn(move || {
            if let Ok(mut conn) = PgConnection::establish(&sweeper) {
                sweep_dead(&mut conn);
            }
        });
        let name = format!("wagate_tpl_{}_{}", std::process::id(), migrations_hash());
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .expect("drop a leftover template");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .expect("create the template database");
        Db::open(&database_url(server, &name), 2)
            .and_then(|db| db.migrate())
            .expect("migrate the template database");
        Template { name }
    }
}

/// Drops the templates and clones of test processes that no longer run.
fn sweep_dead(conn: &mut PgConnection) {
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    let names: Vec<Name> = diesel::sql_query(
        "SELECT datname FROM pg_database WHERE datname ~ '^wagate_(tpl|it)_[0-9]+_[0-9a-f]+$'",
    )
    .load(conn)
    .unwrap_or_default();
    for Name { datname } in names {
        let pid = datname
            .split('_')
            .nth(2)
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !process_runs(pid)) {
            // Without FORCE: a database somebody is connected to is not stale.
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {datname}")).execute(conn);
        }
    }
}

fn process_runs(pid: u32) -> bool {
    // Where /proc is not there to ask, nothing counts as dead.
    !std::path::Path::new("/proc/self").exists()
        || std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// First 12 hex digits of SHA-256 over the PostgreSQL migrations (names and contents).
fn migrations_hash() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read the migrations") {
            let path = entry.expect("a migrations entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.strip_prefix(&root).unwrap().to_string_lossy().as_bytes());
        h.update(std::fs::read(&f).expect("read a migration"));
    }
    hex::encode(&h.finalize()[..6])
}

/// `postgres://…/<name>` on the server of `server`.
fn database_url(server: &str, name: &str) -> String {
    let (base, _) = server.rsplit_once('/').expect("URL with a database name");
    format!("{base}/{name}")
}

/// Runs statements on the test database, in the backend's own dialect.
pub async fn exec_sql(db: &Db, sqlite: &'static str, postgres: &'static str) {
    db.run(move |c| {
        use diesel::connection::SimpleConnection;
        match c {
            DbConn::Sqlite(c) => c.batch_execute(sqlite),
            DbConn::Postgres(c) => c.batch_execute(postgres),
        }
        .map_err(wagate::error::Error::from)
    })
    .await
    .expect("test SQL");
}
