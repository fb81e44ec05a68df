//! A MinIO server started by the project's script (`integration/s3/s3.sh`) on a port of its
//! own, stopped on drop.

use std::path::PathBuf;
use std::process::{Command, Output};

fn s3_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../integration/s3/s3.sh")
}

pub struct Minio {
    port: String,
    /// The server's own data folder (objects outlive a stop), or the script's default.
    data: Option<tempfile::TempDir>,
    /// The variables (`AWS_*`) a run needs to reach it.
    pub env: Vec<(String, String)>,
}

impl Minio {
    /// Starts a server with the script's default data folder.
    pub fn start(port: u16) -> Minio {
        Minio::start_with(port, None)
    }

    /// Starts a server whose objects outlive a stop, so it can be stopped ([`Minio::down`])
    /// and started again ([`Minio::up`]) mid-run.
    pub fn start_restartable(port: u16) -> Minio {
        Minio::start_with(port, Some(tempfile::tempdir().expect("tempdir")))
    }

    fn start_with(port: u16, data: Option<tempfile::TempDir>) -> Minio {
        let mut m = Minio {
            port: port.to_string(),
            data,
            env: Vec::new(),
        };
        m.up();
        let out = m.script("env");
        m.env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        m
    }

    fn script(&self, command: &str) -> Output {
        let mut cmd = Command::new("bash");
        cmd.arg(s3_script()).arg(command).env("S3_PORT", &self.port);
        match &self.data {
            Some(dir) => cmd.env("HEADWATER_S3_DIR", dir.path()),
            None => cmd.env_remove("HEADWATER_S3_DIR"),
        };
        cmd.output().expect("run integration/s3/s3.sh")
    }

    /// Starts the server (again) and waits until it answers.
    pub fn up(&self) {
        let out = self.script("start");
        assert!(
            out.status.success(),
            "integration/s3/s3.sh start failed (it builds MinIO with Go on first use):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn down(&self) {
        let out = self.script("stop");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Minio {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}
