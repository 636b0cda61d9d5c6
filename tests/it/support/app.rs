//! The gateway under test, set up in one expression:
//!
//! ```ignore
//! let t = TestApp::init(db).with_wasim().with_project().with_sessions(2).with_receiver().start().await;
//! ```
//!
//! [`TestApp::init`] takes the test database; each `with_` adds a part; [`TestAppBuilder::start`]
//! starts what was asked for (wasim, the receiver), then the gateway on a loopback port, then
//! makes the project and links the sessions through it. [`TestApp::stop`] gives the builder
//! back with everything but the gateway, to change settings or the database and start again.

use std::sync::Arc;
use std::time::Duration;
use wagate::app::{LaunchConfig, Server, launch};
use wagate::client;
use wagate::crypto::MasterKey;
use wagate::domain::Settings;
use wagate::domain::admin::{Admin, NewProject};
use wagate::proto::v1::Session;
use wagate::storage::Db;

use super::receiver::Receiver;
use super::session::{self, Sim};
use super::{TestDb, read};

/// A project's credentials and where they point.
#[derive(Debug, Clone, Default)]
pub struct TestProject {
    pub api_key: String,
    pub api_secret: String,
    /// The device (session) RK requests address; empty for project-wide gRPC calls.
    pub device_code: String,
    pub project_id: String,
    /// The id of the device `device_code` names.
    pub device_id: String,
}

impl TestProject {
    /// The same credentials addressing `session` (by its device code).
    pub fn via(&self, session: &Session) -> TestProject {
        TestProject {
            device_code: session.device_code.clone(),
            device_id: session.session_id.clone(),
            ..self.clone()
        }
    }

    /// The same credentials without a device code (project-wide gRPC calls).
    pub fn project_wide(&self) -> TestProject {
        TestProject {
            device_code: String::new(),
            ..self.clone()
        }
    }
}

/// What a [`TestApp`] starts with; from [`TestApp::init`] or [`TestApp::stop`].
pub struct TestAppBuilder {
    db: TestDb,
    key: MasterKey,
    settings: Settings,
    wasim: bool,
    sim: Option<Arc<Sim>>,
    receiver: Option<Arc<Receiver>>,
    wants_receiver: bool,
    project: Option<TestProject>,
    wants_project: bool,
    sessions: Vec<Session>,
    wants_sessions: usize,
}

impl TestAppBuilder {
    /// Sessions connect to a wasim of their own instead of WhatsApp.
    pub fn with_wasim(mut self) -> Self {
        self.wasim = true;
        self
    }

    /// A project (10,000 a minute, 1,000,000 a month) with one device: [`TestApp::project`].
    pub fn with_project(mut self) -> Self {
        self.wants_project = true;
        self
    }

    /// `n` sessions of the project (named A, B, …), linked by QR at wasim:
    /// [`TestApp::session`]. Implies [`Self::with_wasim`] and [`Self::with_project`].
    pub fn with_sessions(mut self, n: usize) -> Self {
        self.wants_sessions = n;
        self.with_wasim().with_project()
    }

    /// A webhook receiver on loopback ([`TestApp::receiver`]), and the webhook settings it
    /// needs: private receivers allowed, fast retries.
    pub fn with_receiver(mut self) -> Self {
        self.wants_receiver = true;
        self.settings.webhooks = wagate::webhooks::Settings {
            allow_private: true,
            retry_base: Duration::from_millis(100),
            // Generous: a timeout after the receiver stored a hit would deliver it twice.
            timeout: Duration::from_secs(15),
            ..wagate::webhooks::Settings::default()
        };
        self
    }

    /// The master key (a fresh one by default; kept across [`TestApp::stop`]).
    pub fn with_key(mut self, key: MasterKey) -> Self {
        self.key = key;
        self
    }

    /// The node id the gateway reports (`node-test` by default).
    pub fn node(mut self, id: &str) -> Self {
        self.settings.node_id = id.to_owned();
        self
    }

    /// Changes the gateway's settings in place.
    pub fn configure(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(&mut self.settings);
        self
    }

    pub fn db(&self) -> &TestDb {
        &self.db
    }

    pub fn sim(&self) -> &Sim {
        self.sim.as_deref().expect("with_wasim()")
    }

    pub fn receiver(&self) -> &Receiver {
        self.receiver.as_deref().expect("with_receiver()")
    }

    /// Stops wasim (unless another node still uses it), for a test that ends stopped.
    pub async fn shutdown(self) {
        if let Some(sim) = self.sim.and_then(Arc::into_inner) {
            sim.handle.shutdown().await;
        }
    }

    /// Starts what was asked for, the gateway, then makes the project and the sessions.
    pub async fn start(self) -> TestApp {
        let sim = match self.sim {
            Some(sim) => Some(sim),
            None if self.wasim => Some(Arc::new(Sim::start().await)),
            None => None,
        };
        let receiver = match self.receiver {
            Some(r) => Some(r),
            None if self.wants_receiver => Some(Arc::new(Receiver::start().await)),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let server = launch(
            LaunchConfig {
                connector: sim.as_deref().map(Sim::connector),
                database_url: self.db.url.clone(),
                master_key: self.key.clone(),
                settings: self.settings.clone(),
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
        let mut t = TestApp {
            server,
            base,
            http,
            key: self.key,
            db: self.db,
            settings: self.settings,
            sim,
            receiver,
            project: self.project,
            sessions: self.sessions,
        };
        if t.project.is_none() && self.wants_project {
            t.project = Some(t.create_project().await);
        }
        if t.sessions.len() < self.wants_sessions {
            let mut c = t.sessions_client().await;
            let p = t.project().clone();
            while t.sessions.len() < self.wants_sessions {
                let name = char::from(b'A' + t.sessions.len() as u8).to_string();
                let s = session::link(&mut c, &p, t.wa(), &name, &session::next_phone()).await;
                t.sessions.push(s);
            }
        }
        t
    }
}

/// A running gateway and the parts it was started with.
pub struct TestApp {
    pub server: Server,
    /// `http://127.0.0.1:<port>`, for REST, gRPC and grpc-web alike.
    pub base: String,
    pub http: reqwest::Client,
    pub key: MasterKey,
    pub db: TestDb,
    settings: Settings,
    sim: Option<Arc<Sim>>,
    receiver: Option<Arc<Receiver>>,
    project: Option<TestProject>,
    sessions: Vec<Session>,
}

impl TestApp {
    /// A gateway on `db` with a fresh master key, the default settings and node `node-test`.
    pub fn init(db: TestDb) -> TestAppBuilder {
        TestAppBuilder {
            db,
            key: MasterKey::generate(),
            settings: Settings {
                node_id: "node-test".into(),
                ..Settings::default()
            },
            wasim: false,
            sim: None,
            receiver: None,
            wants_receiver: false,
            project: None,
            wants_project: false,
            sessions: Vec::new(),
            wants_sessions: 0,
        }
    }

    /// Stops the gateway and gives back everything else (database, key, settings, wasim,
    /// receiver, project, sessions) to start another on.
    pub async fn stop(self) -> TestAppBuilder {
        self.server.shutdown().await;
        TestAppBuilder {
            db: self.db,
            key: self.key,
            settings: self.settings,
            wasim: self.sim.is_some(),
            sim: self.sim,
            receiver: self.receiver,
            wants_receiver: false,
            project: self.project,
            wants_project: false,
            sessions: self.sessions,
            wants_sessions: 0,
        }
    }

    /// Stops the gateway, then wasim (unless another node still uses it).
    pub async fn shutdown(self) {
        self.server.shutdown().await;
        if let Some(sim) = self.sim.and_then(Arc::into_inner) {
            sim.handle.shutdown().await;
        }
    }

    /// A second node on the same database, master key, settings and wasim; the project and
    /// sessions are this node's too.
    pub fn another_node(&self, id: &str) -> TestAppBuilder {
        TestAppBuilder {
            db: self.db.shared(),
            key: self.key.clone(),
            settings: self.settings.clone(),
            wasim: self.sim.is_some(),
            sim: self.sim.clone(),
            receiver: self.receiver.clone(),
            wants_receiver: false,
            project: self.project.clone(),
            wants_project: false,
            sessions: self.sessions.clone(),
            wants_sessions: 0,
        }
        .node(id)
    }

    /// The project of [`TestAppBuilder::with_project`].
    pub fn project(&self) -> &TestProject {
        self.project.as_ref().expect("with_project()")
    }

    /// Session `i` of [`TestAppBuilder::with_sessions`], as it was when linked.
    pub fn session(&self, i: usize) -> &Session {
        &self.sessions[i]
    }

    pub fn sim(&self) -> &wasim::ServerHandle {
        &self.sim.as_deref().expect("with_wasim()").handle
    }

    /// wasim's admin API: the simulated phone, and faults at WhatsApp.
    pub fn wa(&self) -> &wasim::client::Admin {
        &self.sim.as_deref().expect("with_wasim()").admin
    }

    pub fn receiver(&self) -> &Receiver {
        self.receiver.as_deref().expect("with_receiver()")
    }

    /// The gateway's own admin operations, on a handle of its database.
    pub fn admin(&self) -> Admin {
        Admin::new(Db::open(&self.db.url, 2).expect("db"), self.key.clone())
    }

    /// Another project (10,000 a minute, 1,000,000 a month) with one device.
    pub async fn create_project(&self) -> TestProject {
        self.create_project_with(10_000, 1_000_000).await
    }

    pub async fn create_project_with(
        &self,
        rate_limit_per_minute: i64,
        monthly_quota: i64,
    ) -> TestProject {
        let admin = self.admin();
        seed_project(
            &admin,
            NewProject {
                name: "test".into(),
                rate_limit_per_minute,
                monthly_quota,
                max_sessions: 10,
            },
            1,
        )
        .await
        .remove(0)
    }

    pub async fn sessions_client(&self) -> session::Client {
        session::Client::connect(self.base.clone())
            .await
            .expect("gRPC connect")
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

/// Creates `project` with `devices` devices through the admin operations; one
/// [`TestProject`] per device, in order.
pub async fn seed_project(admin: &Admin, project: NewProject, devices: usize) -> Vec<TestProject> {
    let p = admin.create_project(project).await.expect("project");
    let mut out = Vec::new();
    for _ in 0..devices {
        let d = admin
            .create_device(&p.project_id, None, None)
            .await
            .expect("device");
        out.push(TestProject {
            api_key: p.api_key.clone(),
            api_secret: p.api_secret.clone(),
            device_code: d.device_code,
            project_id: p.project_id.clone(),
            device_id: d.device_id,
        });
    }
    out
}
