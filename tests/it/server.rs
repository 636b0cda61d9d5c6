//! Operability and the new-user path: health, metrics, and the CLI + `wagate sign`
//! flow from the README (the real binary, a real curl).

use std::process::Command;
use wagate::crypto::MasterKey;

use crate::support::{TestApp, TestDb, read};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics() {
    let t = TestApp::init(TestDb::sqlite()).with_project().start().await;
    let p = t.project();
    let (code, h) = read(t.http.get(t.url("/health")).send().await.unwrap()).await;
    assert_eq!((code, h["status"].as_str()), (200, Some("ok")));
    let (code, _) = read(t.http.get(t.url("/ready")).send().await.unwrap()).await;
    assert_eq!(code, 200);

    let (code, _) = t
        .send_json(
            p,
            serde_json::json!({"recipient": "6281234567890", "message": "m"}),
        )
        .await;
    assert_eq!(code, 201);
    let metrics = t
        .http
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"wagate_http_requests_total{route="/api/v1/send",method="POST",code="201"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("wagate_http_request_duration_seconds_bucket"),
        "latency histogram"
    );
    assert!(metrics.contains("wagate_queue_depth"), "queue depth gauge");
}

fn wagate(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(args)
        .current_dir(dir)
        .env_remove("WAGATE_MASTER_KEY")
        .env_remove("WAGATE_DATABASE_URL")
        .output()
        .expect("run wagate");
    assert!(
        out.status.success(),
        "wagate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&out.stdout).into_owned())
    })
}

/// README quick start: create a project and a device with the CLI on the default SQLite
/// file, then send with the curl command `wagate sign` prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_quick_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = wagate(
        dir.path(),
        &["project", "create", "--name", "Shop", "--json"],
    );
    let (pid, key, secret) = (
        p["project_id"].as_str().unwrap(),
        p["api_key"].as_str().unwrap(),
        p["api_secret"].as_str().unwrap(),
    );
    let d = wagate(
        dir.path(),
        &[
            "device",
            "create",
            "--project",
            pid,
            "--code",
            "RK-0001",
            "--json",
        ],
    );
    assert_eq!(d["device_code"], "RK-0001");
    assert!(d["device_id"].is_string());
    let list = wagate(dir.path(), &["project", "list", "--json"]);
    assert_eq!(list[0]["project_id"], pid);
    assert!(
        list.to_string().find(secret).is_none(),
        "the secret is shown only once"
    );

    // The generated key file is private.
    let key_file = dir.path().join("wagate.db.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let master = MasterKey::parse(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    let db = TestDb::sqlite_at(dir.path().join("wagate.db").to_string_lossy().into_owned());
    let t = TestApp::init(db)
        .with_key(master)
        .node("node-01")
        .start()
        .await;

    let send = wagate(
        dir.path(),
        &[
            "sign",
            "--api-key",
            key,
            "--api-secret",
            secret,
            "--device-code",
            "RK-0001",
            "--url",
            &t.url("/api/v1/send"),
            "--data",
            r#"{"recipient":"6281234567890","type":"text","message":"Hello from RK Connect"}"#,
        ],
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(send.as_str().unwrap())
        .output()
        .expect("curl");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["meta"]["server_id"], "node-01");

    std::fs::write(dir.path().join("image.jpg"), crate::support::files::JPEG).unwrap();
    let image = wagate(
        dir.path(),
        &[
            "sign",
            "--api-key",
            key,
            "--api-secret",
            secret,
            "--device-code",
            "RK-0001",
            "--url",
            &t.url("/api/v1/send"),
            "--form",
            "recipient=6281234567890",
            "--form",
            "type=image",
            "--form",
            "message=Promo today",
            "--form",
            "media=@image.jpg",
        ],
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(image.as_str().unwrap())
        .current_dir(dir.path())
        .output()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(body["data"]["status"], "queued", "{body}");

    let id = body["data"]["id"].as_str().unwrap();
    let status = wagate(
        dir.path(),
        &[
            "sign",
            "--api-key",
            key,
            "--api-secret",
            secret,
            "--method",
            "GET",
            "--url",
            &t.url(&format!("/api/v1/status/{id}")),
        ],
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(status.as_str().unwrap())
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["data"]["id"], id);
}

/// `wagate cluster status|drain|resume` read and change the node registry every node shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_cli_shows_and_drains_nodes() {
    let t = TestApp::init(TestDb::sqlite())
        .node("node-cli")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let url = t.db.url.clone();
    let state = || {
        let v = wagate(
            dir.path(),
            &["cluster", "status", "--json", "--database-url", &url],
        );
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == "node-cli")
            .map(|n| n["state"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("node-cli registered: {v}"))
    };
    assert_eq!(state(), "live");
    let out = wagate(
        dir.path(),
        &["cluster", "drain", "node-cli", "--database-url", &url],
    );
    assert!(out.as_str().unwrap().contains("drains"), "{out}");
    assert_eq!(state(), "draining");
    wagate(
        dir.path(),
        &["cluster", "resume", "node-cli", "--database-url", &url],
    );
    assert_eq!(state(), "live");
    let unknown = Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(["cluster", "drain", "nope", "--database-url", &url])
        .env_remove("WAGATE_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("node not found"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    t.shutdown().await;
}
