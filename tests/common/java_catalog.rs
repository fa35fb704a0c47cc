//! The Apache Iceberg reference catalog (../shared/tools/java-catalog: Iceberg's own
//! `CatalogHandlers` over a `JdbcCatalog` in PostgreSQL, no prefix), an independent catalog for
//! floe to front in tests. Started on 127.0.0.1 per test over a fresh database and warehouse
//! directory; its process group is killed when it is dropped.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct JavaCatalog {
    child: Child,
    pub port: u16,
    pub url: String,
    pub warehouse: tempfile::TempDir,
}

impl Drop for JavaCatalog {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// `run.sh` of the reference catalog: `$FLOE_JAVA_CATALOG`, else beside this checkout in
/// ../shared (as CI lays it out).
fn launcher() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("FLOE_JAVA_CATALOG") {
        return Some(PathBuf::from(path));
    }
    let beside =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/java-catalog/run.sh");
    let java = Command::new("java").arg("-version").output().is_ok();
    (beside.exists() && java).then_some(beside)
}

/// The catalog, or `None` (with a message) where it cannot run and is not required
/// (`FLOE_REQUIRE_UPSTREAM`, which tests/run.sh sets when ../shared and Java are there).
pub async fn start() -> Option<JavaCatalog> {
    start_with(None).await
}

/// As [`start`], on a given port (a test that starts floe before its upstream).
pub async fn start_on(port: u16) -> Option<JavaCatalog> {
    start_with(Some(port)).await
}

async fn start_with(port: Option<u16>) -> Option<JavaCatalog> {
    let Some(launcher) = launcher() else {
        assert!(
            std::env::var("FLOE_REQUIRE_UPSTREAM").is_err(),
            "the reference catalog is required: ../shared/tools/java-catalog/run.sh and Java 17"
        );
        eprintln!("upstream tests skipped: no ../shared/tools/java-catalog or no Java");
        return None;
    };
    let database = super::new_database().await;
    let database = url::Url::parse(&database).unwrap();
    let jdbc = format!(
        "jdbc:postgresql://127.0.0.1:{}{}",
        database.port().unwrap(),
        database.path()
    );
    let mut warehouse = tempfile::tempdir().unwrap();
    // One start at a time: the first on a machine compiles the server into a shared directory.
    static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _starting = STARTING.lock().await;
    // A port picked free may be taken by another test's server before the catalog binds it
    // (the catalog then exits): a catalog that exits is started again on another port.
    for _ in 0..5 {
        let port = port.unwrap_or_else(super::region::free_port);
        let child = Command::new("bash")
            .arg(&launcher)
            .arg(port.to_string())
            .arg(&jdbc)
            .arg(database.username())
            .arg(format!("file://{}", warehouse.path().display()))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the reference catalog");
        let mut catalog = JavaCatalog {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            warehouse,
        };
        // The first start on a machine compiles the server.
        for _ in 0..3000 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(catalog);
            }
            if catalog.child.try_wait().ok().flatten().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if catalog.child.try_wait().ok().flatten().is_none() {
            panic!("the reference catalog did not start on port {port} within 300 s");
        }
        warehouse = std::mem::replace(&mut catalog.warehouse, tempfile::tempdir().unwrap());
    }
    panic!("the reference catalog exited at every start");
}
