//! What the benchmarks share: server processes measured from outside (CPU seconds, memory),
//! their serving pair, dx-admission and the baseline started as release processes, and the plot
//! of latency against load.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Pki;
use crate::common::load::Target;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A server process under load, stopped when dropped.
pub struct Process {
    pub name: String,
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// A line of /proc/<pid>/status in MiB (`VmRSS`, `VmHWM`).
    pub fn memory_mib(&self, field: &str) -> f64 {
        memory_mib(self.pid(), field)
    }
}

/// CPU time (user + system) process `pid` used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
    ticks / clock_ticks()
}

/// A line of /proc/<pid>/status in MiB (`VmRSS`, `VmHWM`).
pub fn memory_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The serving pair every subject uses, and the CA the load generator trusts.
pub struct Tls {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl Tls {
    /// A pair for 127.0.0.1 and localhost.
    pub fn new() -> Self {
        Self::with_names(&[])
    }

    /// A pair for 127.0.0.1, localhost and `names` (e.g. the DNS name of a Service).
    pub fn with_names(names: &[&str]) -> Self {
        let pki = Pki::new("benchmark CA");
        let mut sans = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        sans.extend(names.iter().map(|n| (*n).to_owned()));
        let key_pair = rcgen::KeyPair::generate().expect("key");
        let cert = pki.sign(&rcgen::CertificateParams::new(sans).expect("names"), &key_pair);
        let key = key_pair.serialize_pem();
        let dir = tempfile::Builder::new().prefix("dx-bench-").tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("tls.crt"), cert).expect("cert written");
        std::fs::write(dir.path().join("tls.key"), key).expect("key written");
        std::fs::write(dir.path().join("checksum.key"), "load-benchmark-checksum-key").expect("key written");
        Self { ca_pem: pki.ca_pem.clone(), dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn target(&self, addr: SocketAddr) -> Target {
        Target::new(addr, &self.ca_pem)
    }
}

/// Plain HTTP GET on the metrics port; the status code.
pub async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Starts dx-admission and waits until /readyz says 200; the process and its time to ready.
pub async fn start_dx(tls: &Tls, schemas: &Path, kubeconfig: Option<&Path>) -> (Process, Duration) {
    let (port, ops) = (free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_dx-admission"));
    command
        .arg("serve")
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--metrics-listen=127.0.0.1:{ops}"))
        .arg(format!("--tls-cert={}", tls.path("tls.crt").display()))
        .arg(format!("--tls-key={}", tls.path("tls.key").display()))
        .arg(format!("--schemas={}", schemas.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(kubeconfig) = kubeconfig {
        command
            .arg("--cluster")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--checksum-key-file={}", tls.path("checksum.key").display()))
            .arg("--identity=load-benchmark");
    }
    let started = Instant::now();
    let child = command.spawn().expect("dx-admission starts");
    let process = Process { name: "dx-admission".into(), child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
    let ops = SocketAddr::from(([127, 0, 0, 1], ops));
    let deadline = started + Duration::from_secs(600);
    while get_status(ops, "/readyz").await != Some(200) {
        assert!(Instant::now() < deadline, "dx-admission not ready in 10 minutes");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (process, started.elapsed())
}

/// Starts the baseline (this program again, in baseline mode; `echo_uid`: the allow-all webhook).
pub async fn start_baseline(tls: &Tls, echo_uid: bool) -> Process {
    let port = free_port();
    let child = Command::new(std::env::current_exe().expect("own path"))
        .arg("baseline-server")
        .args(echo_uid.then_some("--echo-uid"))
        .arg(tls.path("tls.crt"))
        .arg(tls.path("tls.key"))
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .spawn()
        .expect("baseline starts");
    Process { name: "baseline".into(), child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({cpu}), loopback, release build")
}

/// Latency (ms) at one offered rate (reviews/s).
#[derive(Clone, Copy, Debug)]
pub struct Point {
    pub rate: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

/// The baseline: the same stack (tokio, rustls, hyper-util, axum) answering a fixed allowed
/// review after reading the body, with nothing else. With `--echo-uid` it is the allow-all
/// webhook an API server accepts: it reads the review's uid and echoes it.
pub mod baseline {
    use std::sync::Arc;

    use axum::Router;
    use axum::body::Bytes;
    use axum::routing::post;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::TlsAcceptor;

    const ANSWER: &str =
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"baseline","allowed":true}}"#;

    #[derive(serde::Deserialize)]
    struct Review<'a> {
        #[serde(borrow)]
        request: Uid<'a>,
    }

    #[derive(serde::Deserialize)]
    struct Uid<'a> {
        uid: &'a str,
    }

    /// Allowed, with the uid of `body` (a review).
    fn echo(body: &[u8]) -> String {
        let uid = serde_json::from_slice::<Review>(body).map_or("", |review| review.request.uid);
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{{"uid":"{uid}","allowed":true}}}}"#
        )
    }

    pub async fn serve(args: &[String]) {
        let (echo_uid, args) = match args {
            [flag, rest @ ..] if flag == "--echo-uid" => (true, rest),
            _ => (false, args),
        };
        let [cert, key, listen] = args else { panic!("usage: baseline-server [--echo-uid] <cert> <key> <listen>") };
        let certs: Vec<CertificateDer> =
            CertificateDer::pem_file_iter(cert).expect("cert").collect::<Result<_, _>>().expect("cert PEM");
        let key = PrivateKeyDer::from_pem_file(key).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("serving pair");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let app = Router::new().route(
            "/validate",
            post(move |body: Bytes| async move {
                let answer: std::borrow::Cow<'static, str> = if echo_uid {
                    echo(&body).into()
                } else {
                    std::hint::black_box(body);
                    ANSWER.into()
                };
                ([(axum::http::header::CONTENT_TYPE, "application/json")], answer)
            }),
        );
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let _ = tcp.set_nodelay(true);
            let (acceptor, service) = (acceptor.clone(), TowerToHyperService::new(app.clone()));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await;
            });
        }
    }
}

/// The PNG of latency against offered load.
pub mod plot {
    use std::path::Path;

    use plotters::prelude::*;

    /// A TrueType font for the labels: `DX_BENCH_FONT`, else a common system font.
    fn font() -> Result<&'static [u8], String> {
        let candidates = std::env::var("DX_BENCH_FONT").into_iter().chain(
            [
                "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/TTF/DejaVuSans.ttf",
                "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            ]
            .map(String::from),
        );
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                return Ok(Box::leak(bytes.into_boxed_slice()));
            }
        }
        Err("no TrueType font found: set DX_BENCH_FONT to a .ttf file (e.g. DejaVuSans.ttf)".into())
    }

    pub fn latency(path: &Path, curves: &[(String, Vec<super::Point>)]) -> Result<(), String> {
        let fail = |e: &dyn std::fmt::Display| e.to_string();
        plotters::style::register_font("sans-serif", FontStyle::Normal, font()?)
            .map_err(|_| "the font does not load".to_string())?;
        let root = BitMapBackend::new(path, (1100, 650)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let max_x = curves.iter().flat_map(|(_, p)| p.iter().map(|p| p.rate)).fold(1.0, f64::max) * 1.05;
        let max_y = curves.iter().flat_map(|(_, p)| p.iter().map(|p| p.p999)).fold(1.0, f64::max) * 1.5;
        let mut chart = ChartBuilder::on(&root)
            .caption("dx-admission: latency against offered load (p50 thin, p99 thick)", ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(0f64..max_x, (0.05f64..max_y).log_scale())
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("offered load, reviews per second")
            .y_desc("latency, ms (log scale)")
            .draw()
            .map_err(|e| fail(&e))?;
        let colours = [BLACK, RED, BLUE, GREEN, MAGENTA, CYAN];
        for (i, (name, points)) in curves.iter().enumerate() {
            let colour = colours[i % colours.len()];
            chart
                .draw_series(LineSeries::new(points.iter().map(|p| (p.rate, p.p99)), colour.stroke_width(3)))
                .map_err(|e| fail(&e))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3)));
            chart
                .draw_series(LineSeries::new(points.iter().map(|p| (p.rate, p.p50)), colour.stroke_width(1)))
                .map_err(|e| fail(&e))?;
            chart
                .draw_series(points.iter().map(|p| Circle::new((p.rate, p.p99), 4, colour.filled())))
                .map_err(|e| fail(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))
    }
}
