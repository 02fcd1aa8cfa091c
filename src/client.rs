//! The Kubernetes client every part that talks to the API server starts from: the server's
//! cluster side, self-managed certificates, and the `plan` and `report` commands.

use std::path::{Path, PathBuf};

use kube::Client;

/// Why no client could be made. Each message names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("--kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("cannot configure a Kubernetes client (in-cluster or $KUBECONFIG): {0}")]
    Infer(String),
}

/// A client from a kubeconfig file, else inferred (in-cluster service account, else $KUBECONFIG).
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, ConnectError> {
    let kube_config = match kubeconfig {
        Some(path) => {
            let error = |message: String| ConnectError::Kubeconfig { path: path.to_owned(), message };
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| error(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| error(e.to_string()))?
        }
        None => kube::Config::infer().await.map_err(|e| ConnectError::Infer(e.to_string()))?,
    };
    Client::try_from(kube_config).map_err(|e| ConnectError::Infer(e.to_string()))
}
