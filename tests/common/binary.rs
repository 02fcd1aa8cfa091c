//! The real `dx-admission serve` as a child process: started on ports the OS picks, its JSON
//! log lines read as they come, SIGTERM, and the wait for its clean exit.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::eventually;

pub const BIN: &str = env!("CARGO_BIN_EXE_dx-admission");

/// A running `dx-admission serve`, killed when dropped.
pub struct Running {
    pub child: Child,
    pub logs: mpsc::Receiver<Value>,
    pub tls: SocketAddr,
    pub ops: SocketAddr,
    pub stdout: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` in `dir` with `args` and waits for its `dx-admission serving` line (and, with
/// `--dev`, for the webhook configurations it prints).
pub fn serve(dir: &std::path::Path, args: &[&str]) -> Running {
    serve_with_env(dir, args, &[])
}

/// [`serve`] with environment variables set, as a pod's `env` sets them.
pub fn serve_with_env(dir: &std::path::Path, args: &[&str], variables: &[(&str, &str)]) -> Running {
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .envs(variables.iter().copied())
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, logs) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let (tls, ops) = loop {
        let line = logs
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("no `dx-admission serving` line ({e}); it logged:\n{}", seen.join("\n")));
        seen.push(line.to_string());
        if line["message"] == "dx-admission serving" {
            let addr = |field: &str| line[field].as_str().unwrap().parse().unwrap();
            break (addr("tls_addr"), addr("ops_addr"));
        }
        // `--log-format text`: `... dx-admission serving tls_addr=127.0.0.1:1234 ops_addr=...`
        if let Some(text) = line.as_str().filter(|l| l.contains(" dx-admission serving ")) {
            let addr = |field: &str| {
                let value = text.split(&format!("{field}=")).nth(1).and_then(|v| v.split(' ').next());
                value.unwrap_or_else(|| panic!("{field} in {text:?}")).parse().unwrap()
            };
            break (addr("tls_addr"), addr("ops_addr"));
        }
    };
    let mut stdout = String::new();
    if args.contains(&"--dev") {
        let reader = BufReader::new(child.stdout.take().unwrap());
        for line in reader.lines().map_while(Result::ok) {
            stdout.push_str(&line);
            stdout.push('\n');
            if line.starts_with("# End of the webhook configurations.") {
                break;
            }
        }
    }
    Running { child, logs, tls, ops, stdout }
}

/// Waits (at most 10 s) for the process to exit after SIGTERM, and checks it exited with 0.
pub async fn exits_cleanly_after_the_drain(running: &mut Running) {
    exits_cleanly_within(running, Duration::from_secs(10)).await;
}

/// Waits (at most `timeout`: a pod's termination grace period) for the process to exit after
/// SIGTERM, and checks it exited with 0.
pub async fn exits_cleanly_within(running: &mut Running, timeout: Duration) {
    let exited = eventually(timeout, || {
        let done = matches!(running.child.try_wait(), Ok(Some(_)));
        async move { done }
    })
    .await;
    assert!(exited, "the server exits after the drain");
    assert!(running.child.wait().unwrap().success());
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Runs a `dx-admission` command in the repository with `stdin`: its exit code, stdout, stderr.
pub fn command(args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .current_dir(super::repo())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dx-admission starts");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("stdin written");
    let output = child.wait_with_output().expect("dx-admission finishes");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
