//! A real cluster on loopback where workloads run: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and kwok with simulated nodes (pods are scheduled, turn Running and Ready, Job
//! pods complete, claims are bound; no container runs), plus kubectl and Helm of pinned releases.
//! The binaries are built from the Go module proxy on first use and cached (`DX_E2E_CACHE`, default
//! `.cache/e2e/`); the processes are stopped by their own PIDs when the cluster is dropped, also
//! when a scenario fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

/// The pinned releases. Changing one rebuilds into a new cache directory.
pub const KUBERNETES: &str = "v1.32.13";
pub const HELM: &str = "v4.3.1";
/// cert-manager's controller and cainjector, and its CRDs from the same module: the last line
/// whose root module still holds `cmd/controller` and `cmd/cainjector`.
pub const CERT_MANAGER: &str = "v1.11.5";
const CERT_MANAGER_VERSION_FLAGS: &str = "-X github.com/cert-manager/cert-manager/pkg/util.AppVersion=v1.11.5";
/// The simulated nodes' kubelet, and its stages (how pods, nodes and claims progress).
pub const KWOK: &str = "v0.8.0";
/// Simulated nodes, each with room for every DX pod the suite starts.
pub const NODES: [&str; 3] = ["kwok-node-0", "kwok-node-1", "kwok-node-2"];

/// A tool built from one of the Go modules under `tests/e2e/tools/`.
struct Tool {
    name: &'static str,
    module_dir: &'static str,
    package: &'static str,
    release: &'static str,
    /// Version stamps, as the projects' own release builds set them.
    ldflags: &'static str,
}

/// Kubernetes binaries report their version from these; without them the API server says
/// v0.0.0-master and Helm's kubeVersion checks fail.
const KUBE_VERSION_FLAGS: &str = "-X k8s.io/component-base/version.gitVersion=v1.32.13 \
     -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=32 \
     -X k8s.io/client-go/pkg/version.gitVersion=v1.32.13 -X k8s.io/client-go/pkg/version.gitMajor=1 \
     -X k8s.io/client-go/pkg/version.gitMinor=32";

const TOOLS: [Tool; 9] = [
    Tool { name: "etcd", module_dir: "kube", package: "go.etcd.io/etcd/server/v3", release: KUBERNETES, ldflags: "" },
    Tool {
        name: "kube-apiserver",
        module_dir: "kube",
        package: "k8s.io/kubernetes/cmd/kube-apiserver",
        release: KUBERNETES,
        ldflags: KUBE_VERSION_FLAGS,
    },
    Tool {
        name: "kubectl",
        module_dir: "kube",
        package: "k8s.io/kubernetes/cmd/kubectl",
        release: KUBERNETES,
        ldflags: KUBE_VERSION_FLAGS,
    },
    Tool {
        name: "kube-controller-manager",
        module_dir: "kube",
        package: "k8s.io/kubernetes/cmd/kube-controller-manager",
        release: KUBERNETES,
        ldflags: KUBE_VERSION_FLAGS,
    },
    Tool {
        name: "kube-scheduler",
        module_dir: "kube",
        package: "k8s.io/kubernetes/cmd/kube-scheduler",
        release: KUBERNETES,
        ldflags: KUBE_VERSION_FLAGS,
    },
    Tool { name: "helm", module_dir: "helm", package: "helm.sh/helm/v4/cmd/helm", release: HELM, ldflags: "" },
    Tool { name: "kwok", module_dir: "kwok", package: "sigs.k8s.io/kwok/cmd/kwok", release: KWOK, ldflags: "" },
    Tool {
        name: "cert-manager-controller",
        module_dir: "cert-manager",
        package: "github.com/cert-manager/cert-manager/cmd/controller",
        release: CERT_MANAGER,
        ldflags: CERT_MANAGER_VERSION_FLAGS,
    },
    Tool {
        name: "cert-manager-cainjector",
        module_dir: "cert-manager",
        package: "github.com/cert-manager/cert-manager/cmd/cainjector",
        release: CERT_MANAGER,
        ldflags: CERT_MANAGER_VERSION_FLAGS,
    },
];

/// Bumped when the way tools are built changes, so cached builds are redone.
const BUILD_REVISION: u32 = 2;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Paths of the built tools.
pub struct Binaries {
    pub etcd: PathBuf,
    pub apiserver: PathBuf,
    pub kubectl: PathBuf,
    pub controller_manager: PathBuf,
    pub scheduler: PathBuf,
    pub helm: PathBuf,
    pub kwok: PathBuf,
    pub cert_manager_controller: PathBuf,
    pub cert_manager_cainjector: PathBuf,
}

/// Where built tools are kept: `$DX_E2E_CACHE`, else `.cache/e2e/` in the repository (ignored).
fn cache_dir() -> PathBuf {
    std::env::var_os("DX_E2E_CACHE").map_or_else(|| repo().join(".cache/e2e"), PathBuf::from)
}

/// Builds whatever is not cached yet. Needs Go (this machine kind has it) and the module proxy.
pub fn ensure_binaries() -> Result<Binaries, String> {
    let mut paths = Vec::new();
    for tool in &TOOLS {
        let dir = cache_dir().join(format!("{}-{}-b{BUILD_REVISION}", tool.module_dir, tool.release));
        let path = dir.join(tool.name);
        if !path.exists() {
            let started = Instant::now();
            eprintln!("e2e: building {} {} (cached in {})", tool.name, tool.release, dir.display());
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let partial = dir.join(format!(".{}.partial", tool.name));
            let status = Command::new("go")
                .current_dir(repo().join("tests/e2e/tools").join(tool.module_dir))
                .env("CGO_ENABLED", "0")
                .env("GOFLAGS", "-mod=mod")
                .args(["build", "-trimpath", "-ldflags", tool.ldflags, "-o"])
                .arg(&partial)
                .arg(tool.package)
                .status()
                .map_err(|e| {
                    format!(
                        "cannot run go ({e}): the end-to-end suite builds {} and the other cluster binaries from \
                         the Go module proxy; install Go 1.26 or newer and put `go` on PATH (or set DX_E2E_CACHE \
                         to a directory that holds them built)",
                        tool.name
                    )
                })?;
            if !status.success() {
                return Err(format!("go build {} failed ({status})", tool.package));
            }
            std::fs::rename(&partial, &path).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!("e2e: built {} in {:.0}s", tool.name, started.elapsed().as_secs_f64());
        }
        paths.push(path);
    }
    let mut paths = paths.into_iter();
    let mut next = || paths.next().expect("one path per tool");
    Ok(Binaries {
        etcd: next(),
        apiserver: next(),
        kubectl: next(),
        controller_manager: next(),
        scheduler: next(),
        helm: next(),
        kwok: next(),
        cert_manager_controller: next(),
        cert_manager_cainjector: next(),
    })
}

/// Where the Go module `module` (`path@version`) is unpacked, downloading it if needed.
fn module_dir(module: &str) -> Result<PathBuf, String> {
    let output = Command::new("go")
        .env("GOFLAGS", "-mod=mod")
        .args(["mod", "download", "-json", module])
        .output()
        .map_err(|e| format!("cannot run go: {e}"))?;
    let info: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("go mod download {module}: {e}"))?;
    Ok(PathBuf::from(info["Dir"].as_str().ok_or_else(|| format!("go mod download {module}: {info}"))?))
}

/// cert-manager's CRDs from the pinned module (they are Helm templates there: their template
/// labels are dropped), as manifests for `kubectl apply`.
pub fn cert_manager_crds() -> Result<Vec<String>, String> {
    let dir = module_dir(&format!("github.com/cert-manager/cert-manager@{CERT_MANAGER}"))?.join("deploy/crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let mut in_labels = false;
            let kept: Vec<&str> = text
                .lines()
                .filter(|line| {
                    if *line == "  labels:" {
                        in_labels = true;
                    } else if !line.starts_with("    ") {
                        in_labels = false;
                    }
                    !in_labels
                })
                .collect();
            Ok(kept.join("\n") + "\n")
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Kills a child we started, by its own handle, and reaps it.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A running etcd and kube-apiserver, and the clients configured for them.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    etcd: Child,
    apiserver: Child,
    /// kube-controller-manager, kube-scheduler and kwok, once started.
    controllers: Vec<Child>,
    pub kubeconfig: PathBuf,
    /// The API server's URL.
    pub server: String,
    pub bins: Binaries,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.controllers {
            stop(child);
        }
        stop(&mut self.apiserver);
        stop(&mut self.etcd);
    }
}

/// kwok's stages from its module: nodes turn Ready and keep a heartbeat, pods turn Running and
/// Ready (Job pods complete, deleted pods go), claims are provisioned and bound.
const KWOK_STAGES: [&str; 4] = ["node/fast", "node/heartbeat", "pod/fast", "volume/fast"];

/// The documents of [`KWOK_STAGES`]: the Stages, as one YAML stream for kwok's `--config`, and
/// the objects to create in the cluster (the default StorageClass whose claims kwok binds).
fn kwok_stages() -> Result<(String, String), String> {
    let module = module_dir(&format!("sigs.k8s.io/kwok@{KWOK}"))?;
    let mut documents = Vec::new();
    for stage in KWOK_STAGES {
        let dir = module.join("kustomize/stage").join(stage);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "yaml") && p.file_name().is_some_and(|n| n != "kustomization.yaml")
            })
            .collect();
        files.sort();
        for file in files {
            documents.push(std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?);
        }
    }
    let (stages, objects): (Vec<String>, Vec<String>) =
        documents.into_iter().partition(|d| d.lines().any(|l| l == "kind: Stage"));
    Ok((stages.join("\n---\n"), objects.join("\n---\n")))
}

/// A simulated node kwok manages: Ready, with room for every pod the suite starts.
fn node_manifest(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations: {{kwok.x-k8s.io/node: fake}}\n\
         \x20 labels: {{kubernetes.io/hostname: {name}, kubernetes.io/os: linux, type: kwok}}\n\
         status:\n  allocatable: {{cpu: '64', memory: 512Gi, pods: '110'}}\n  capacity: {{cpu: '64', memory: 512Gi, pods: '110'}}\n"
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Where the API server writes its audit log (JSON lines), in the cluster's directory.
pub const AUDIT_LOG: &str = "audit.log";

/// What the API server audits: writes of DX kinds in the DX example release's namespace, at
/// `Metadata` (where webhooks' audit annotations appear), and nothing else.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  namespaces: [dx-release]
  verbs: [create, update, patch, delete]
  resources:
  - group: \"\"
    resources: [configmaps]
  - group: apps
    resources: [statefulsets, deployments]
- level: None
";

impl Cluster {
    pub fn start(bins: Binaries) -> Result<Self, String> {
        let dir = tempfile::Builder::new().prefix("dx-e2e-").tempdir().map_err(|e| e.to_string())?;
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("audit-policy.yaml"), AUDIT_POLICY).map_err(|e| format!("audit policy: {e}"))?;

        // PKI: a CA, the apiserver's serving pair, an admin client in system:masters, SA keys.
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "e2e cluster CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let serving_key = KeyPair::generate().unwrap();
        let serving = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let serving_pem = serving.signed_by(&serving_key, &issuer).unwrap().pem();
        let admin_key = KeyPair::generate().unwrap();
        let mut admin = CertificateParams::default();
        admin.distinguished_name.push(DnType::CommonName, "admin");
        admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_pem = admin.signed_by(&admin_key, &issuer).unwrap().pem();
        let sa_key = KeyPair::generate().unwrap();
        write(&path("ca.crt"), &ca_pem);
        write(&path("apiserver.crt"), &serving_pem);
        write(&path("apiserver.key"), &serving_key.serialize_pem());
        write(&path("sa.key"), &sa_key.serialize_pem());
        write(&path("sa.pub"), &sa_key.public_key_pem());
        // The admin identity as files too, for clients that do not read kubeconfigs.
        write(&path("admin.crt"), &admin_pem);
        write(&path("admin.key"), &admin_key.serialize_pem());

        let (etcd_client, etcd_peer, secure) = (free_port(), free_port(), free_port());
        let log = |name: &str| std::fs::File::create(path(name)).map(Stdio::from).map_err(|e| e.to_string());
        let etcd = Command::new(&bins.etcd)
            .args(["--name", "e2e", "--data-dir"])
            .arg(path("etcd"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"))
            .arg(format!("--initial-cluster=e2e=http://127.0.0.1:{etcd_peer}"))
            .args(["--unsafe-no-fsync", "--log-level=warn"])
            .stdout(log("etcd.log")?)
            .stderr(log("etcd.log")?)
            .spawn()
            .map_err(|e| format!("etcd: {e}"))?;
        let apiserver = Command::new(&bins.apiserver)
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_client}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={secure}"))
            .arg(format!("--tls-cert-file={}", path("apiserver.crt").display()))
            .arg(format!("--tls-private-key-file={}", path("apiserver.key").display()))
            .arg(format!("--client-ca-file={}", path("ca.crt").display()))
            .arg(format!("--service-account-key-file={}", path("sa.pub").display()))
            .arg(format!("--service-account-signing-key-file={}", path("sa.key").display()))
            .args([
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--endpoint-reconciler-type=none",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
            ])
            .arg(format!("--cert-dir={}", path("apiserver-certs").display()))
            .arg(format!("--audit-policy-file={}", path("audit-policy.yaml").display()))
            .arg(format!("--audit-log-path={}", path(AUDIT_LOG).display()))
            .stdout(log("apiserver.log")?)
            .stderr(log("apiserver.log")?)
            .spawn()
            .map_err(|e| format!("kube-apiserver: {e}"))?;

        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let kubeconfig = path("kubeconfig");
        write(
            &kubeconfig,
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:{secure}\n    certificate-authority-data: {}\n\
                 users:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
                 contexts:\n- name: e2e\n  context: {{cluster: e2e, user: admin}}\ncurrent-context: e2e\n",
                b64(&ca_pem),
                b64(&admin_pem),
                b64(&admin_key.serialize_pem())
            ),
        );
        let server = format!("https://127.0.0.1:{secure}");
        let mut cluster = Self { dir, etcd, apiserver, controllers: Vec::new(), kubeconfig, server, bins };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = cluster.kubectl(&["get", "--raw=/readyz"], None);
            if ready.status.success() && String::from_utf8_lossy(&ready.stdout).trim() == "ok" {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(cluster.dir.path().join("apiserver.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                return Err(format!("kube-apiserver not ready in 60s; last log lines:\n{}", tail.join("\n")));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster.start_controllers_and_nodes()?;
        Ok(cluster)
    }

    /// Starts kube-controller-manager, kube-scheduler and kwok, registers [`NODES`] and waits
    /// until they are Ready and the controllers made the `default` ServiceAccount.
    fn start_controllers_and_nodes(&mut self) -> Result<(), String> {
        let path = |name: &str| self.dir.path().join(name);
        let log = |name: &str| std::fs::File::create(path(name)).map(Stdio::from).map_err(|e| e.to_string());
        let kubeconfig = self.kubeconfig.display().to_string();
        let with_kubeconfig = |command: &mut Command| {
            command
                .arg(format!("--kubeconfig={kubeconfig}"))
                .arg(format!("--authentication-kubeconfig={kubeconfig}"))
                .arg(format!("--authorization-kubeconfig={kubeconfig}"))
                .args(["--leader-elect=false", "--bind-address=127.0.0.1"])
                .arg(format!("--secure-port={}", free_port()));
        };
        let mut controller_manager = Command::new(&self.bins.controller_manager);
        with_kubeconfig(&mut controller_manager);
        controller_manager
            .arg(format!("--service-account-private-key-file={}", path("sa.key").display()))
            .arg(format!("--root-ca-file={}", path("ca.crt").display()))
            // No cloud: node IPAM, load balancers, routes and cloud node lifecycle stay off.
            .arg("--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle,-route")
            .stdout(log("kube-controller-manager.log")?)
            .stderr(log("kube-controller-manager.log")?);
        let mut scheduler = Command::new(&self.bins.scheduler);
        with_kubeconfig(&mut scheduler);
        scheduler.stdout(log("kube-scheduler.log")?).stderr(log("kube-scheduler.log")?);
        let stages = path("kwok-stages.yaml");
        let (stage_documents, cluster_objects) = kwok_stages()?;
        write(&stages, &stage_documents);
        let mut kwok = Command::new(&self.bins.kwok);
        kwok.arg(format!("--kubeconfig={kubeconfig}"))
            .arg(format!("--config={}", stages.display()))
            .args([
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-ip=127.0.0.1",
            ])
            .arg(format!("--server-address=127.0.0.1:{}", free_port()))
            .stdout(log("kwok.log")?)
            .stderr(log("kwok.log")?);
        for (name, command) in
            [("kube-controller-manager", controller_manager), ("kube-scheduler", scheduler), ("kwok", kwok)]
        {
            let mut command = command;
            self.controllers.push(command.spawn().map_err(|e| format!("{name}: {e}"))?);
        }
        let mut objects: Vec<String> = NODES.iter().map(|n| node_manifest(n)).collect();
        objects.push(cluster_objects);
        let created = self.kubectl(&["apply", "-f", "-"], Some(&objects.join("\n---\n")));
        if !created.status.success() {
            return Err(format!("nodes: {:?}", text(&created)));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self.kubectl(
                &[
                    "get",
                    "nodes",
                    "-o",
                    "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{' '}{end}",
                ],
                None,
            );
            let service_account = self.kubectl(&["get", "serviceaccount", "default", "-n", "default"], None);
            let (statuses, _) = text(&ready);
            if statuses.split_whitespace().filter(|s| *s == "True").count() == NODES.len()
                && service_account.status.success()
            {
                return self.start_cert_manager();
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the simulated nodes are not Ready in 60s (Ready: {statuses:?}); see kwok.log and \
                     kube-controller-manager.log in {}",
                    self.dir.path().display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Writes a kubeconfig at `path` that authenticates with the bearer `token` (a
    /// ServiceAccount's, from the TokenRequest API).
    pub fn token_kubeconfig(&self, path: &Path, token: &str) {
        let ca = std::fs::read_to_string(self.dir.path().join("ca.crt")).expect("the cluster CA");
        let b64 = base64::engine::general_purpose::STANDARD.encode(ca);
        write(
            path,
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {}\n    certificate-authority-data: {b64}\n\
                 users:\n- name: token\n  user:\n    token: {token}\n\
                 contexts:\n- name: e2e\n  context: {{cluster: e2e, user: token}}\ncurrent-context: e2e\n",
                self.server
            ),
        );
    }

    /// Installs cert-manager's CRDs (and the VolumeSnapshot API backups may use) and starts
    /// cert-manager's controller and cainjector (the webhook is not needed: the API server
    /// validates the objects by the CRDs' schemas).
    fn start_cert_manager(&mut self) -> Result<(), String> {
        let snapshots =
            std::fs::read_to_string(repo().join("tests/e2e/volumesnapshot-crd.yaml")).map_err(|e| e.to_string())?;
        for crd in cert_manager_crds()?.into_iter().chain([snapshots]) {
            let applied = self.kubectl(&["apply", "--server-side", "-f", "-"], Some(&crd));
            if !applied.status.success() {
                return Err(format!("CRDs: {:?}", text(&applied)));
            }
        }
        let established = self.kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"], None);
        if !established.status.success() {
            return Err(format!("cert-manager CRDs not established: {:?}", text(&established)));
        }
        let path = |name: &str| self.dir.path().join(name);
        let log = |name: &str| std::fs::File::create(path(name)).map(Stdio::from).map_err(|e| e.to_string());
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig.display());
        let mut controller = Command::new(&self.bins.cert_manager_controller);
        controller
            .args([&kubeconfig, "--leader-elect=false", "--cluster-resource-namespace=kube-system"])
            .arg(format!("--metrics-listen-address=127.0.0.1:{}", free_port()))
            .stdout(log("cert-manager-controller.log")?)
            .stderr(log("cert-manager-controller.log")?);
        let mut cainjector = Command::new(&self.bins.cert_manager_cainjector);
        cainjector
            .args([&kubeconfig, "--leader-elect=false"])
            .stdout(log("cert-manager-cainjector.log")?)
            .stderr(log("cert-manager-cainjector.log")?);
        for (name, mut command) in [("cert-manager controller", controller), ("cert-manager cainjector", cainjector)] {
            self.controllers.push(command.spawn().map_err(|e| format!("{name}: {e}"))?);
        }
        Ok(())
    }

    /// Runs kubectl against the cluster.
    /// Stops kube-controller-manager, kube-scheduler and kwok: objects are stored and admitted,
    /// nothing runs them (no pods, no ReplicaSets).
    pub fn stop_controllers(&mut self) {
        for child in &mut self.controllers {
            stop(child);
        }
        self.controllers.clear();
    }

    /// The API server's process id (for its CPU time and memory).
    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.id()
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_kubectl(&self.bins.kubectl, &self.kubeconfig, args, stdin)
    }

    /// Runs helm against the cluster, with its state in the cluster's temporary directory, and
    /// dx-admission (for its post-renderer plugin) on PATH with the bundled schemas.
    pub fn helm(&self, args: &[&str]) -> Output {
        let home = self.dir.path().join("helm");
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_dx-admission"));
        let path = std::env::join_paths(
            binary
                .parent()
                .into_iter()
                .map(Path::to_path_buf)
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .expect("PATH");
        run(
            Command::new(&self.bins.helm)
                .env("PATH", path)
                .env("DX_ADMISSION_SCHEMAS", repo().join("schemas"))
                .env("KUBECONFIG", &self.kubeconfig)
                .env("HELM_CACHE_HOME", home.join("cache"))
                .env("HELM_CONFIG_HOME", home.join("config"))
                .env("HELM_DATA_HOME", home.join("data"))
                .args(args),
            None,
        )
    }
}

fn run(command: &mut Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client starts");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("stdin written");
    }
    child.wait_with_output().expect("client finishes")
}

/// stdout and stderr of a finished command, for assertions and failure messages.
pub fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Runs `kubectl` with `kubeconfig` (for threads that hold no [`Cluster`]).
pub fn run_kubectl(kubectl: &Path, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    run(Command::new(kubectl).arg(format!("--kubeconfig={}", kubeconfig.display())).args(args), stdin)
}
