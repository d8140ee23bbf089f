//! The shared test kit of the workspace (never shipped): what the API's tests, the operator's tests
//! and the benchmarks all need, written once — where the real services are, free ports, a tansu
//! (Kafka-protocol) broker process, scratch PostgreSQL databases and a polling `wait_until`.
//!
//! Every helper fails loudly with a message saying what is missing and how to get it: a test never
//! passes silently because a service or tool is absent (`./test.sh` installs and starts them all).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

/// The PostgreSQL server tests use, without a database name (`TEST_DATABASE_SERVER`, default the
/// machine's `postgres://postgres@127.0.0.1:5432`).
pub fn database_server_url() -> String {
    std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The Redis server tests use (`TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A local TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("no free local port: {error}"))
}

/// Polls `check` every `every` until it returns true; panics naming `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, every: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Where the tansu broker binary is: `$TANSU_BIN`, else `/var/tmp/plamatio-tools/bin/tansu` (where
/// `scripts/test-tools.sh` installs it), else `tansu` on `PATH`; otherwise a panic saying how to get it.
pub fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU_BIN").filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "TANSU_BIN={} does not exist: the Kafka tests need a tansu broker binary",
            path.display()
        );
        return path;
    }
    let tools = Path::new("/var/tmp/plamatio-tools/bin/tansu");
    if tools.is_file() {
        return tools.to_path_buf();
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for directory in std::env::split_paths(&paths) {
            let candidate = directory.join("tansu");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "no tansu broker binary (set TANSU_BIN, put `tansu` on PATH, or run `bash scripts/test-tools.sh`, \
         which installs it): the Kafka tests need a real Kafka-protocol broker and never skip"
    );
}

/// Starts `tansu broker` with in-memory storage listening on `port` and advertising `advertised`
/// (a different port when clients must go through a proxy), writing its output to `log` (appended).
/// Returns the child once the port accepts connections, or `None` if it exited or did not listen
/// within `limit` (the caller may retry: a port can stay held for a moment after a stop).
pub fn spawn_tansu(port: u16, advertised: u16, log: &Path, limit: Duration) -> Option<Child> {
    let binary = tansu_binary();
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|error| panic!("tansu log {}: {error}", log.display()));
    let log_copy = log_file
        .try_clone()
        .unwrap_or_else(|error| panic!("tansu log {}: {error}", log.display()));
    let mut child = Command::new(&binary)
        .args([
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised}"),
            "--storage-engine",
            "memory://tansu/",
        ])
        .env_remove("CLUSTER_ID")
        .stdin(Stdio::null())
        .stdout(log_copy)
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start tansu ({}): {error}", binary.display()));
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A tansu broker on a free port, killed when dropped. Tests that need restarts or network cuts
/// build on [`spawn_tansu`] instead.
pub struct TansuBroker {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl TansuBroker {
    /// Starts a broker on a free port and waits until it accepts connections (panics otherwise,
    /// with the broker's log).
    pub fn start() -> TansuBroker {
        for attempt in 0..5u64 {
            let port = free_port();
            let log = std::env::temp_dir().join(format!(
                "plamatio-tansu-{port}-{}.log",
                uuid::Uuid::new_v4().simple()
            ));
            if let Some(child) = spawn_tansu(port, port, &log, Duration::from_secs(15)) {
                return TansuBroker { child, port, log };
            }
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            assert!(attempt < 4, "tansu did not start; its log:\n{output}");
            std::thread::sleep(Duration::from_millis(200 * (attempt + 1)));
        }
        unreachable!("the loop returns or panics")
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("tansu log kept at {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Creates an empty database `<prefix>_<uuid>` on `server` (e.g. [`database_server_url`]) and
/// returns its name and URL. Panics with a clear message when PostgreSQL is not reachable.
pub async fn create_scratch_database(server: &str, prefix: &str) -> (String, String) {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|error| {
            panic!("PostgreSQL is required and is not reachable at {server}: {error}")
        });
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|error| panic!("CREATE DATABASE {name}: {error}"));
    let url = format!("{server}/{name}");
    (name, url)
}

/// Drops a scratch database on `server` (forcing its connections closed), from a thread with its own
/// runtime so that it works from `Drop`, which cannot await. Failures are ignored: `./test.sh` sweeps
/// leftovers.
pub fn drop_scratch_database(server: String, name: String) {
    let dropper = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            if let Ok(mut admin) = PgConnection::connect(&format!("{server}/postgres")).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await;
            }
        });
    });
    let _ = dropper.join();
}
