//! `--client-ca`: only clients presenting a certificate from the configured CA (the API server)
//! are served; anyone else fails the TLS handshake.

mod common;

use std::sync::Arc;

use common::{Pki, TestServer, fixture};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// A client certificate from `pki`, as the API server's webhook client would present.
fn client_identity(pki: &Pki) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver-webhook-client");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = pki.sign(&params, &key);
    (cert, key.serialize_pem())
}

/// POSTs a real review over a TLS connection that presents `identity` (or none).
async fn review_with(server: &TestServer, identity: Option<(String, String)>) -> Result<u16, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server.pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>().unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(server.tls_addr).await.map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(server.tls_addr.ip().into()), tcp)
        .await
        .map_err(|e| e.to_string())?;
    // With TLS 1.3 the server checks the client's certificate after the client's handshake
    // finishes; a refusal then surfaces on the first request.
    let mut sender = common::http1::<_, http_body_util::Full<bytes::Bytes>>(stream).await;
    let request = hyper::Request::post("/validate")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(fixture("deployment-create.json").to_string())))
        .unwrap();
    sender.send_request(request).await.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn only_clients_with_a_certificate_from_the_client_ca_are_served() {
    let api_server_ca = Pki::new("API server client CA");
    let temp = tempfile::tempdir().unwrap();
    let ca_file = temp.path().join("client-ca.crt");
    std::fs::write(&ca_file, &api_server_ca.ca_pem).unwrap();
    let server = TestServer::start_with(move |config| config.client_ca = Some(ca_file)).await;

    assert_eq!(review_with(&server, Some(client_identity(&api_server_ca))).await, Ok(200));
    assert!(review_with(&server, None).await.is_err(), "a client without a certificate is refused");
    let stranger = Pki::new("someone else");
    assert!(
        review_with(&server, Some(client_identity(&stranger))).await.is_err(),
        "a certificate from another CA is refused"
    );
    assert_eq!(
        review_with(&server, Some(client_identity(&api_server_ca))).await,
        Ok(200),
        "and the server is fine after"
    );
}

#[tokio::test]
async fn the_client_ca_bundle_reloads_and_a_bad_one_is_refused() {
    let (old_ca, new_ca) = (Pki::new("old API server client CA"), Pki::new("new API server client CA"));
    let temp = tempfile::tempdir().unwrap();
    let ca_file = temp.path().join("client-ca.crt");
    std::fs::write(&ca_file, &old_ca.ca_pem).unwrap();
    let watched = ca_file.clone();
    let server = TestServer::start_with(move |config| config.client_ca = Some(watched)).await;
    assert_eq!(review_with(&server, Some(client_identity(&old_ca))).await, Ok(200));
    let (ok, failed) =
        ("dx_admission_tls_reloads_total{result=\"ok\"}", "dx_admission_tls_reloads_total{result=\"failed\"}");

    // The API server's client CA rolls: the new bundle serves new handshakes, without a restart.
    let ok_before = server.metric(ok).await;
    std::fs::write(&ca_file, &new_ca.ca_pem).unwrap();
    let reloaded =
        common::eventually(std::time::Duration::from_secs(10), || async { server.metric(ok).await > ok_before }).await;
    assert!(reloaded, "the new bundle is loaded");
    assert_eq!(review_with(&server, Some(client_identity(&new_ca))).await, Ok(200));
    assert!(review_with(&server, Some(client_identity(&old_ca))).await.is_err(), "the old CA no longer admits");

    // A bundle that holds no certificate is refused; the last good one keeps serving.
    let failed_before = server.metric(failed).await;
    std::fs::write(&ca_file, "not a certificate\n").unwrap();
    let refused = common::eventually(std::time::Duration::from_secs(10), || async {
        server.metric(failed).await > failed_before
    })
    .await;
    assert!(refused, "the bad bundle is counted as a failed reload");
    assert_eq!(review_with(&server, Some(client_identity(&new_ca))).await, Ok(200));
    assert!(review_with(&server, Some(client_identity(&old_ca))).await.is_err());
}
