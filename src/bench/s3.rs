//! `floe bench s3-copy`: replication's file copies against an S3-compatible server (s3s-fs, started
//! here over a temporary directory): S3 to S3 (CopyObject on the server's side) and S3 to a local
//! directory (streamed through floe), each compared with the AWS CLI copying the same objects
//! (`aws s3 cp --recursive`) when `aws` is on the PATH, with the process's peak memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};

use crate::replication::copy::Copier;
use crate::replication::paths::PathMap;
use crate::storage::{LocalStorage, Location, S3Settings, S3Storage, Storage};

#[derive(Debug, Clone)]
pub struct S3BenchOptions {
    /// The s3s-fs binary (`cargo install s3s-fs@0.14.1 --locked --features binary`).
    pub s3s_fs: PathBuf,
    pub total_mb: u64,
    pub files: usize,
}

const KEY: &str = "bench-key";
const SECRET: &str = "bench-secret-0123456789";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn run_s3(options: S3BenchOptions) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("s3");
    for bucket in ["src", "dst"] {
        std::fs::create_dir_all(root.join(bucket))?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _server = Server(
        Command::new(&options.s3s_fs)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", KEY, "--secret-key", SECRET])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", options.s3s_fs.display()))?,
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settings = S3Settings {
        endpoint: Some(endpoint.clone()),
        region: Some("us-east-1".to_string()),
        path_style: true,
        access_key_id: Some(KEY.to_string()),
        secret_access_key: Some(SECRET.into()),
    };
    let s3: Arc<dyn Storage> =
        Arc::new(S3Storage::new(&settings, Location::parse("s3://src")?).await);
    let s3_destination: Arc<dyn Storage> =
        Arc::new(S3Storage::new(&settings, Location::parse("s3://dst")?).await);
    let size = (options.total_mb * 1024 * 1024 / options.files.max(1) as u64).max(1) as usize;
    let names: Vec<String> = (0..options.files)
        .map(|i| format!("f{i:05}.parquet"))
        .collect();

    println!(
        "floe bench s3-copy: s3s-fs on 127.0.0.1 over a local directory, {} files of {} KiB ({} MiB), {} cores\n",
        names.len(),
        size / 1024,
        options.total_mb,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    futures::stream::iter(names.iter())
        .map(|name| {
            let s3 = s3.clone();
            async move {
                let bytes: Vec<u8> = (0..size).map(|b| (b % 251) as u8).collect();
                let mut reader = std::io::Cursor::new(bytes);
                let location = Location::parse(&format!("s3://src/t/{name}"))?;
                s3.write_stream(&location, &mut reader, true).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<_>>()
        .await?;

    println!(
        "| copy | floe s | floe MiB/s | aws s3 cp s | ratio to aws s3 cp | peak RSS MiB (before → after) |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    let local_target = dir.path().join("local");
    let cases: [(&str, Arc<dyn Storage>, String, String); 2] = [
        (
            "S3 → S3 (CopyObject)",
            s3_destination.clone(),
            "s3://dst/t".to_string(),
            "s3://dst/aws/".to_string(),
        ),
        (
            "S3 → local (streamed)",
            Arc::new(LocalStorage::new(Location::parse(&format!(
                "file://{}",
                local_target.display()
            ))?)?),
            format!("file://{}/floe", local_target.display()),
            format!("{}/aws/", local_target.display()),
        ),
    ];
    for (label, destination, target, aws_target) in cases {
        let before = super::peak_rss_kib();
        let copier = Copier::new(
            s3.clone(),
            destination,
            PathMap::new("s3://src/t", &target)?,
            16,
            64 * 1024 * 1024,
        );
        let started = Instant::now();
        futures::stream::iter(names.iter())
            .map(|name| {
                let copier = copier.clone();
                async move {
                    let source = Location::parse(&format!("s3://src/t/{name}"))?;
                    let destination = copier.map().destination_location().join(name)?;
                    copier
                        .copy_verbatim(&source, &destination, size as u64)
                        .await?;
                    Ok::<_, anyhow::Error>(())
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
        copier.finish().await?;
        let floe = started.elapsed();
        let after = super::peak_rss_kib();
        let aws = aws_copy(&endpoint, "s3://src/t/", &aws_target)?;
        let mib = options.total_mb as f64;
        println!(
            "| {label} | {:.2} | {:.0} | {} | {} | {:.0} → {:.0} |",
            floe.as_secs_f64(),
            mib / floe.as_secs_f64(),
            aws.map_or("not run".to_string(), |a| format!("{:.2}", a.as_secs_f64())),
            aws.map_or("-".to_string(), |a| format!(
                "{:.2}",
                a.as_secs_f64() / floe.as_secs_f64()
            )),
            before as f64 / 1024.0,
            after as f64 / 1024.0
        );
    }
    Ok(())
}

/// `aws s3 cp --recursive` of the same objects, or `None` without the AWS CLI.
fn aws_copy(endpoint: &str, from: &str, to: &str) -> anyhow::Result<Option<Duration>> {
    let Some(aws) = which("aws") else {
        return Ok(None);
    };
    let started = Instant::now();
    let status = Command::new(aws)
        .args([
            "s3",
            "cp",
            "--recursive",
            "--quiet",
            "--endpoint-url",
            endpoint,
            from,
            to,
        ])
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .status()?;
    if !status.success() {
        bail!("aws s3 cp failed: {status}");
    }
    Ok(Some(started.elapsed()))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| Path::new(path).is_file())
    })
}
