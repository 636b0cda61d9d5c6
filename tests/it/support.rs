//! Shared test support: a real server on a loopback port over a real database (a temp
//! SQLite file, or a fresh PostgreSQL database when WAGATE_TEST_DATABASE_URL is set), and
//! clients that sign requests the way the RK and Qontak documents describe.

use diesel::{Connection, RunQueryDsl};
use std::time::Duration;
use wagate::app::{LaunchConfig, Server, launch};
use wagate::client;
use wagate::crypto::MasterKey;
use wagate::domain::Settings;
use wagate::domain::admin::{Admin, NewProject};
use wagate::storage::Db;

pub const PG_ENV: &str = "WAGATE_TEST_DATABASE_URL";

/// Runs one scenario on SQLite and on PostgreSQL (`<name>::sqlite`, `<name>::postgres`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::TestDb::sqlite()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = $crate::support::TestDb::postgres() {
                    super::$name(db).await
                }
            }
        }
    )+};
}

pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
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

    /// The same database, for a second node; the original keeps ownership (and cleanup).
    pub fn shared(&self) -> TestDb {
        TestDb {
            url: self.url.clone(),
            _dir: None,
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

    /// A fresh database on the server named by WAGATE_TEST_DATABASE_URL; `None` (skipped)
    /// when it is unset, except in CI where that is a failure.
    pub fn postgres() -> Option<TestDb> {
        let Ok(admin_url) = std::env::var(PG_ENV) else {
            assert!(std::env::var("CI").is_err(), "{PG_ENV} must be set in CI");
            eprintln!("skipped: {PG_ENV} is not set");
            return None;
        };
        let name = format!(
            "wagate_it_{}",
            hex::encode(wagate::crypto::random_bytes::<6>())
        );
        let mut conn = diesel::PgConnection::establish(&admin_url).expect("connect to PostgreSQL");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .expect("create database");
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("URL with a database name");
        Some(TestDb {
            url: format!("{base}/{name}"),
            _dir: None,
            pg: Some((admin_url, name)),
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg
            && let Ok(mut conn) = diesel::PgConnection::establish(admin)
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn);
        }
    }
}

pub struct TestServer {
    pub server: Server,
    pub base: String,
    pub key: MasterKey,
    pub db: TestDb,
    pub http: reqwest::Client,
}

#[derive(Debug, Clone)]
pub struct TestProject {
    pub api_key: String,
    pub api_secret: String,
    pub device_code: String,
}

pub fn settings(node: &str) -> Settings {
    Settings {
        node_id: node.to_owned(),
        ..Settings::default()
    }
}

/// Settings for webhook tests: loopback receivers allowed, fast retries.
pub fn webhook_settings(node: &str) -> Settings {
    Settings {
        webhooks: wagate::webhooks::Settings {
            allow_private: true,
            retry_base: Duration::from_millis(100),
            // Generous: a timeout after the receiver stored a hit would deliver it twice.
            timeout: Duration::from_secs(15),
            ..wagate::webhooks::Settings::default()
        },
        ..settings(node)
    }
}

impl TestServer {
    pub async fn start(db: TestDb) -> TestServer {
        Self::start_with(db, MasterKey::generate(), settings("node-test")).await
    }

    pub async fn start_with(db: TestDb, key: MasterKey, settings: Settings) -> TestServer {
        Self::start_full(db, key, settings, None).await
    }

    /// A server whose sessions connect to the loopback WhatsApp simulator.
    pub async fn start_sim(
        db: TestDb,
        key: MasterKey,
        node: &str,
        sim: &wasim::ServerHandle,
    ) -> TestServer {
        Self::start_sim_with(db, key, settings(node), sim).await
    }

    pub async fn start_sim_with(
        db: TestDb,
        key: MasterKey,
        settings: Settings,
        sim: &wasim::ServerHandle,
    ) -> TestServer {
        let connector = wagate::sessions::Connector {
            transport: std::sync::Arc::new(wasim::client::transport_factory(&sim.ws_url())),
            http: std::sync::Arc::new(wasim::client::SimHttpClient::new(sim.addr())),
            version: Some(wasim::client::CLIENT_VERSION),
        };
        Self::start_full(db, key, settings, Some(connector)).await
    }

    async fn start_full(
        db: TestDb,
        key: MasterKey,
        settings: Settings,
        connector: Option<wagate::sessions::Connector>,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let server = launch(
            LaunchConfig {
                connector,
                database_url: db.url.clone(),
                master_key: key.clone(),
                settings,
                db_pool_size: 8,
                writer: None,
            },
            listener,
        )
        .await
        .expect("server starts");
        let base = format!("http://{}", server.addr);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        TestServer {
            server,
            base,
            key,
            db,
            http,
        }
    }

    /// Stops the server and gives back its database (to start another server on it).
    pub async fn stop(self) -> (TestDb, MasterKey) {
        self.server.shutdown().await;
        (self.db, self.key)
    }

    pub fn admin(&self) -> Admin {
        Admin::new(Db::open(&self.db.url, 2).expect("db"), self.key.clone())
    }

    pub async fn project_with(
        &self,
        rate_limit_per_minute: i64,
        monthly_quota: i64,
    ) -> TestProject {
        let admin = self.admin();
        let p = admin
            .create_project(NewProject {
                name: "test".into(),
                rate_limit_per_minute,
                monthly_quota,
                max_sessions: 10,
            })
            .await
            .expect("project");
        let d = admin
            .create_device(&p.project_id, None, None)
            .await
            .expect("device");
        TestProject {
            api_key: p.api_key,
            api_secret: p.api_secret,
            device_code: d.device_code,
        }
    }

    pub async fn project(&self) -> TestProject {
        self.project_with(10_000, 1_000_000).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request signed RK-style over `body`.
    pub fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        p: &TestProject,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        let ts = client::unix_now();
        let sig = client::rk_signature(&p.api_key, &p.api_secret, &ts, &body);
        self.http
            .request(method, self.url(path))
            .header("X-API-KEY", &p.api_key)
            .header("X-DEVICE-CODE", &p.device_code)
            .header("X-TIMESTAMP", ts)
            .header("X-SIGNATURE", sig)
            .body(body)
    }

    /// A signed multipart `POST /api/v1/send`.
    pub async fn send_form(
        &self,
        p: &TestProject,
        form: client::Multipart,
    ) -> (u16, serde_json::Value) {
        let (ct, body) = form.finish();
        let resp = self
            .signed(reqwest::Method::POST, "/api/v1/send", p, body)
            .header("Content-Type", ct)
            .send()
            .await
            .expect("request");
        read(resp).await
    }

    pub async fn send_json(
        &self,
        p: &TestProject,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let resp = self
            .signed(
                reqwest::Method::POST,
                "/api/v1/send",
                p,
                body.to_string().into_bytes(),
            )
            .header("Content-Type", "application/json")
            .send()
            .await
            .expect("request");
        read(resp).await
    }

    pub async fn status(&self, p: &TestProject, id: &str) -> (u16, serde_json::Value) {
        read(
            self.signed(
                reqwest::Method::GET,
                &format!("/api/v1/status/{id}"),
                p,
                Vec::new(),
            )
            .send()
            .await
            .expect("request"),
        )
        .await
    }

    /// Ids of the project's messages (newest first), as the list endpoint returns them.
    pub async fn message_ids(&self, p: &TestProject) -> Vec<String> {
        let (code, body) = read(
            self.signed(
                reqwest::Method::GET,
                "/api/v1/messages?page_size=500",
                p,
                Vec::new(),
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        body["data"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Rate-limit windows are calendar minutes: start a burst well inside one (with 20 s to
/// spare for a loaded machine).
pub async fn clear_of_minute_boundary() {
    let into = chrono::Utc::now().timestamp_millis().rem_euclid(60_000);
    if into > 40_000 {
        tokio::time::sleep(Duration::from_millis((60_500 - into) as u64)).await;
    }
}

/// A gRPC request signed as the README describes (key, timestamp, method, message bytes).
pub fn grpc_signed<T: prost::Message>(p: &TestProject, path: &str, msg: T) -> tonic::Request<T> {
    let ts = client::unix_now();
    let sig = client::grpc_signature(&p.api_key, &p.api_secret, &ts, path, &msg.encode_to_vec());
    let mut req = tonic::Request::new(msg);
    let md = req.metadata_mut();
    md.insert("x-api-key", p.api_key.parse().unwrap());
    md.insert("x-timestamp", ts.parse().unwrap());
    md.insert("x-signature", sig.parse().unwrap());
    if !p.device_code.is_empty() {
        md.insert("x-device-code", p.device_code.parse().unwrap());
    }
    req
}

/// A signed call made the way a browser makes it over grpc-web: HTTP/1.1 POST,
/// `application/grpc-web+proto`, the message in one length-prefixed frame.
pub async fn grpc_web_call(
    t: &TestServer,
    p: &TestProject,
    path: &str,
    msg: &[u8],
) -> reqwest::Response {
    let ts = client::unix_now();
    let sig = client::grpc_signature(&p.api_key, &p.api_secret, &ts, path, msg);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(msg);
    let mut req = t
        .http
        .post(t.url(path))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "http://console.example")
        .header("x-api-key", &p.api_key)
        .header("x-timestamp", &ts)
        .header("x-signature", sig);
    if !p.device_code.is_empty() {
        req = req.header("x-device-code", &p.device_code);
    }
    let resp = req.body(frame).send().await.expect("grpc-web request");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web")
    );
    resp
}

/// A grpc-web call's body so far: its frames (flag, payload) as they arrive.
pub struct WebFrames {
    pub resp: reqwest::Response,
    pub buf: Vec<u8>,
}

impl WebFrames {
    pub fn new(resp: reqwest::Response) -> Self {
        WebFrames {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next whole frame; `None` when the body ended.
    pub async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() >= 5 + len {
                    let frame: Vec<u8> = self.buf.drain(..5 + len).collect();
                    return Some((frame[0], frame[5..].to_vec()));
                }
            }
            let chunk = self.resp.chunk().await.expect("body chunk")?;
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// The next stream message, which must come within 20 s as a data frame.
    pub async fn message<M: prost::Message + Default>(&mut self) -> M {
        let (flag, data) = tokio::time::timeout(Duration::from_secs(20), self.next())
            .await
            .expect("a stream message in time")
            .expect("the stream stays open");
        assert_eq!(
            flag,
            0,
            "a data frame, not trailers: {}",
            String::from_utf8_lossy(&data)
        );
        M::decode(data.as_slice()).expect("a stream message")
    }
}

/// Polls `f` every 100 ms until it yields `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs statements on the test database, in the backend's own dialect.
pub async fn exec_sql(db: &Db, sqlite: &'static str, postgres: &'static str) {
    db.run(move |c| {
        use diesel::connection::SimpleConnection;
        match c {
            wagate::storage::DbConn::Sqlite(c) => c.batch_execute(sqlite),
            wagate::storage::DbConn::Postgres(c) => c.batch_execute(postgres),
        }
        .map_err(wagate::error::Error::from)
    })
    .await
    .expect("test SQL");
}

pub async fn read(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let code = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({code}): {text}"));
    (code, json)
}

/// Asserts the documented error envelope with `code`.
pub fn assert_error(got: &(u16, serde_json::Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["success"], false, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert!(
        got.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        got.1
    );
}

/// Smallest files each allowed format is recognised by (magic bytes).
pub mod files {
    pub const JPEG: &[u8] =
        b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xFF\xD9";
    pub const PNG: &[u8] =
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00";
    pub const PDF: &[u8] = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n";
    pub const MP4: &[u8] = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2\x00\x00\x00\x08free";
    pub const OGG: &[u8] = b"OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x1eOpusHead";
    pub const MP3: &[u8] = b"ID3\x04\x00\x00\x00\x00\x00\x00\xFF\xFB\x90\x64\x00\x00\x00\x00";
    pub const EXE: &[u8] = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xFF\xFF\x00\x00";
}
