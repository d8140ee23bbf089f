//! The real `plamatio-api` binary: subcommands, and `serve` on a random port with generated
//! development keys, talked to over TCP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BINARY: &str = env!("CARGO_BIN_EXE_plamatio-api");

use plamatio_testkit::{database_server_url as server_url, free_port};

#[test]
fn keys_generate_prints_a_key_and_its_digest() {
    let output = Command::new(BINARY)
        .args(["keys", "generate", "--scope", "admin"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    let key = field("key:");
    let digest = field("digest:");
    assert!(key.starts_with("plm_") && key.len() == 68, "{key}");
    assert_eq!(digest, plamatio_api::http::auth::digest_hex(&key));
    assert_eq!(
        field("config:"),
        format!("PLAMATIO_API_KEYS=admin:{digest}")
    );
}

#[test]
fn openapi_subcommand_prints_the_document() {
    let output = Command::new(BINARY).arg("openapi").output().unwrap();
    assert!(output.status.success());
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(document["paths"]["/products/search/{query}"]["get"].is_object());
}

#[test]
fn invalid_key_configuration_fails_start_up_with_a_clear_message() {
    let output = Command::new(BINARY)
        .args(["serve"])
        .env("PLAMATIO_API_KEYS", "owner:1234")
        .env(
            "DATABASE_URL",
            format!("{}/plamatio_never_created", server_url()),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("PLAMATIO_API_KEYS") && stderr.contains("unknown scope"),
        "{stderr}"
    );
}

struct Server {
    child: Child,
    database: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database
            ))
            .output();
    }
}

async fn http_get(port: u16, path: &str, key: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn serve_creates_and_migrates_its_database_and_prints_dev_keys() {
    let database = format!("plamatio_test_bin_{}", uuid::Uuid::new_v4().simple());
    let port = free_port();
    let mut child = Command::new(BINARY)
        .arg("serve")
        .env("DATABASE_URL", format!("{}/{database}", server_url()))
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("PLAMATIO_DEV_KEYS", "1")
        .env_remove("REDIS_URL")
        .env_remove("PLAMATIO_API_KEYS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server { child, database };

    let mut storefront = None;
    let mut admin = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(key) = line.strip_prefix("storefront key:") {
            storefront = Some(key.trim().to_owned());
        }
        if let Some(key) = line.strip_prefix("admin key:") {
            admin = Some(key.trim().to_owned());
        }
        if storefront.is_some() && admin.is_some() {
            break;
        }
    }
    let (storefront, admin) = (
        storefront.expect("storefront key printed"),
        admin.expect("admin key printed"),
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "server did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = http_get(port, "/readyz", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(port, "/products/all", Some(&storefront)).await;
    assert_eq!(status, 200);
    let products: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(products["data"].as_array().unwrap().len(), 25);
    let (status, _) = http_get(port, "/products/all", Some(&admin)).await;
    assert_eq!(status, 200);
    let (status, body) = http_get(port, "/products/all", Some("plm_wrong")).await;
    assert_eq!(status, 401, "{body}");
    drop(server);
}
