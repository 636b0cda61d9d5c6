//! What the benchmarks share: their flags, and a scratch PostgreSQL database.

use diesel::{Connection, RunQueryDsl};

/// `--name <value>` from the command line, or `default`.
pub fn flag(name: &str, default: u64) -> u64 {
    flag_str(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The raw value of `--name <value>`, if given.
pub fn flag_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// A fresh database on the server the first set variable of `vars` names; dropped with this
/// value, also when the run panics.
pub struct ScratchPg {
    admin: diesel::PgConnection,
    name: String,
    pub url: String,
}

impl ScratchPg {
    /// `None` (and a line saying PostgreSQL was skipped) when no variable is set.
    #[allow(dead_code)] // the failover benchmark always has a database (`at`)
    pub fn from_env(vars: &[&str]) -> Option<ScratchPg> {
        let Some(admin_url) = vars.iter().find_map(|v| std::env::var(v).ok()) else {
            println!("PostgreSQL skipped: set WAGATE_BENCH_DATABASE_URL");
            return None;
        };
        Some(Self::at(&admin_url))
    }

    /// A scratch database on the server `admin_url` names.
    pub fn at(admin_url: &str) -> ScratchPg {
        let name = format!(
            "wagate_bench_{}",
            hex::encode(wagate::crypto::random_bytes::<4>())
        );
        let mut admin = diesel::PgConnection::establish(admin_url).expect("PostgreSQL");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .unwrap();
        let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
        ScratchPg { admin, name, url }
    }
}

impl Drop for ScratchPg {
    fn drop(&mut self) {
        let _ = diesel::sql_query(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut self.admin);
    }
}
