//! The image as users run it: `docker run` of `$DX_ADMISSION_IMAGE` (built by `.ci/image`) on the
//! daemon `$DOCKER_HOST` names (`.ci/run` starts its own), with the chart's securityContext, on
//! the host network and loopback ports. Containers are labelled and removed when dropped.

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{eventually, try_http_get};

/// The label on every container the tests start, so CI can remove what is left.
pub const LABEL: &str = "dx-admission.test=1";

/// The image under test, when there is one (`.ci/run` sets `DX_ADMISSION_IMAGE` and `DOCKER_HOST`).
pub fn image() -> Option<String> {
    std::env::var("DX_ADMISSION_IMAGE").ok().filter(|i| !i.is_empty())
}

/// Why the image tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    match image() {
        None => Some("no image: set DX_ADMISSION_IMAGE and DOCKER_HOST (`.ci/run` builds one with .ci/image)".into()),
        Some(_) if !docker(&["version"], None).status.success() => {
            Some("DX_ADMISSION_IMAGE is set but no Docker daemon answers at DOCKER_HOST".into())
        }
        Some(_) => None,
    }
}

/// Runs the docker client with `args`, `stdin` written to it.
pub fn docker(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new("docker")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the docker client runs");
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// The flags that run the container as the chart's pod runs it: read-only root filesystem,
/// user 65532, every capability dropped, no privilege escalation; on the host network.
pub const AS_THE_CHART: [&str; 9] = [
    "--network=host",
    "--read-only",
    "--user=65532:65532",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--label",
    LABEL,
    "--stop-timeout",
    "30",
];

/// A running container, removed when dropped.
pub struct Container {
    pub id: String,
    /// Admission (TLS) and health/metrics addresses on loopback.
    pub tls: SocketAddr,
    pub ops: SocketAddr,
    /// From `docker run` to `/readyz` answering 200.
    pub ready_after: Duration,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Container {
    /// `docker run -d` of the image as the chart runs it, with `mounts` (`host:container:ro`)
    /// and `serve` with `args` on free loopback ports; returns once `/readyz` answers 200.
    pub async fn serve(mounts: &[String], args: &[&str]) -> Self {
        let (tls, ops) = (free_port(), free_port());
        let image = image().expect("an image");
        let (listen, metrics) = (format!("--listen=127.0.0.1:{tls}"), format!("--metrics-listen=127.0.0.1:{ops}"));
        let mut run: Vec<&str> = vec!["run", "--detach"];
        run.extend(AS_THE_CHART);
        for mount in mounts {
            run.extend(["--volume", mount]);
        }
        run.push(&image);
        run.extend(["serve", &listen, &metrics]);
        run.extend(args);
        let started = Instant::now();
        let output = docker(&run, None);
        assert!(output.status.success(), "docker run: {}", String::from_utf8_lossy(&output.stderr));
        let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let mut container = Self {
            id,
            tls: format!("127.0.0.1:{tls}").parse().unwrap(),
            ops: format!("127.0.0.1:{ops}").parse().unwrap(),
            ready_after: Duration::ZERO,
        };
        let addr = container.ops;
        let ready = eventually(Duration::from_secs(30), || async move {
            let answer = tokio::time::timeout(Duration::from_secs(1), try_http_get(addr, "/readyz")).await;
            matches!(answer, Ok(Some((200, _))))
        })
        .await;
        assert!(ready, "the container is not ready within 30s; its log:\n{}", container.logs());
        container.ready_after = started.elapsed();
        container
    }

    /// What the container wrote to stdout and stderr.
    pub fn logs(&self) -> String {
        let output = docker(&["logs", &self.id], None);
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    }

    /// `docker inspect --format` of the container.
    pub fn inspect(&self, format: &str) -> String {
        let output = docker(&["inspect", "--format", format, &self.id], None);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "--force", &self.id], None);
    }
}
