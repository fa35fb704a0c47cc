//! A throwaway PostgreSQL cluster from the machine's PostgreSQL binaries, for `floe dev`, the
//! benchmarks and the tests. PostgreSQL refuses to run as root, so when floe runs as root the
//! cluster runs as the `postgres` user. It listens on 127.0.0.1 only, with trust authentication.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum PgTempError {
    #[error(
        "no PostgreSQL binaries found: install PostgreSQL (Debian: apt-get install postgresql) \
         or set FLOE_PG_BIN to the directory holding initdb and pg_ctl"
    )]
    NoBinaries,
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("preparing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A cluster in a directory; [`PgCluster::stop`] stops it (not Drop: callers decide when).
#[derive(Debug)]
pub struct PgCluster {
    bin_dir: PathBuf,
    root: PathBuf,
    port: u16,
    as_postgres_user: bool,
    /// The server options (`pg_ctl -o`), kept so a restart listens on the same port.
    server_options: String,
}

/// Options for a new cluster.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// Trade durability for speed (fsync off): for tests only, never for `floe dev`.
    pub fast_unsafe: bool,
    /// Load pg_stat_statements (benchmarks count floe's statements with it).
    pub statement_stats: bool,
    /// Record when each transaction committed (`track_commit_timestamp`: benchmarks measure
    /// replication lag with it).
    pub commit_timestamps: bool,
}

fn find_bin_dir() -> Result<PathBuf, PgTempError> {
    if let Ok(dir) = std::env::var("FLOE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    // Debian keeps each major version's server binaries under /usr/lib/postgresql/<major>/bin.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((major, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let output = Command::new("pg_config").arg("--bindir").output();
    if let Ok(out) = output
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("pg_ctl").exists() {
            return Ok(dir);
        }
    }
    Err(PgTempError::NoBinaries)
}

fn free_port() -> Result<u16, PgTempError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| PgTempError::Io {
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })
}

impl PgCluster {
    /// Initialises a cluster under `root` (or reuses the one there) and starts it on a free port.
    pub fn start(root: &Path, options: &PgOptions) -> Result<Self, PgTempError> {
        let bin_dir = find_bin_dir()?;
        let as_postgres_user = nix::unistd::geteuid().is_root();
        let io = |source| PgTempError::Io {
            path: root.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(root).map_err(io)?;
        let root = root.canonicalize().map_err(io)?;
        let port = free_port()?;
        let mut server_options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' \
             -c max_connections=300"
        );
        if options.fast_unsafe {
            server_options
                .push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        if options.statement_stats {
            server_options.push_str(" -c shared_preload_libraries=pg_stat_statements");
        }
        if options.commit_timestamps {
            server_options.push_str(" -c track_commit_timestamp=on");
        }
        let cluster = Self {
            bin_dir,
            root,
            port,
            as_postgres_user,
            server_options,
        };
        if as_postgres_user {
            cluster.run(
                "chown",
                &["-R", "postgres:postgres", cluster.root_str()],
                false,
            )?;
        }
        if !cluster.data_dir().join("PG_VERSION").exists() {
            let data = cluster.data_dir();
            cluster.run_pg(
                "initdb",
                &[
                    "-D",
                    data.to_str().unwrap_or_default(),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ],
            )?;
        }
        cluster.clear_leftover_server()?;
        cluster.restart()?;
        Ok(cluster)
    }

    /// A server a previous run left (its owner was killed with SIGKILL, so it never stopped it)
    /// still holds the data directory: stop it, so this run can start its own. A `postmaster.pid`
    /// whose process is gone, or is not PostgreSQL, is stale and goes.
    fn clear_leftover_server(&self) -> Result<(), PgTempError> {
        let pid_file = self.data_dir().join("postmaster.pid");
        let Ok(text) = std::fs::read_to_string(&pid_file) else {
            return Ok(());
        };
        let pid = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok());
        let is_postgres = pid.is_some_and(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains("postgres"))
        });
        if is_postgres {
            eprintln!(
                "stopping the PostgreSQL a previous run left running in {} (pid {})",
                self.root.display(),
                pid.unwrap_or_default()
            );
            return self.stop();
        }
        std::fs::remove_file(&pid_file).map_err(|source| PgTempError::Io {
            path: pid_file,
            source,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The running server's process id (from its `postmaster.pid`).
    pub fn server_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The URL of a database in this cluster (no password: trust authentication on loopback).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database if it does not exist.
    pub async fn ensure_database(&self, name: &str) -> Result<(), sqlx::Error> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres")).await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            // Identifiers cannot be bound; the name is quoted and its quotes doubled.
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            sqlx::query(&format!("CREATE DATABASE {quoted}"))
                .execute(&mut conn)
                .await?;
        }
        conn.close().await
    }

    /// Stops the cluster (fast shutdown: active connections are closed).
    pub fn stop(&self) -> Result<(), PgTempError> {
        let data = self.data_dir();
        self.run_pg(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
    }

    /// Starts the (stopped) cluster, on the port chosen when it was made.
    pub fn restart(&self) -> Result<(), PgTempError> {
        let data = self.data_dir();
        let log = self.root.join("postgres.log");
        self.run_pg(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-l",
                log.to_str().unwrap_or_default(),
                "-o",
                &self.server_options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn root_str(&self) -> &str {
        self.root.to_str().unwrap_or_default()
    }

    fn run_pg(&self, tool: &str, args: &[&str]) -> Result<(), PgTempError> {
        let tool = self.bin_dir.join(tool);
        self.run(
            tool.to_str().unwrap_or_default(),
            args,
            self.as_postgres_user,
        )
    }

    fn run(&self, program: &str, args: &[&str], as_postgres: bool) -> Result<(), PgTempError> {
        let mut command = if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", program]);
            c
        } else {
            Command::new(program)
        };
        command.args(args).current_dir(&self.root);
        let output = command.output().map_err(|e| PgTempError::Command {
            command: program.to_string(),
            detail: e.to_string(),
        })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(PgTempError::Command {
                command: format!("{program} {}", args.join(" ")),
                detail: format!(
                    "{}{} (see {}/postgres.log)",
                    String::from_utf8_lossy(&output.stderr),
                    String::from_utf8_lossy(&output.stdout),
                    self.root.display()
                ),
            })
        }
    }
}
