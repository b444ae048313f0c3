//! https for tests: a certificate for `127.0.0.1` and `localhost` issued by a CA of
//! the test's own (rcgen), served with rustls's `ring` provider; and a proxy that
//! serves a plain-HTTP server over https, as a load balancer in front of shiplog does.

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A server's TLS: its certificate, and the CA that issued it.
#[derive(Clone)]
pub struct LocalTls {
    pub acceptor: TlsAcceptor,
    /// The issuing CA's certificate (PEM), which a client must be told to trust.
    pub ca_pem: String,
}

impl LocalTls {
    /// A fresh CA and a certificate it issued for `127.0.0.1` and `localhost`.
    pub fn issue() -> LocalTls {
        let certificates = TestCertificates::issue("shiplog test");
        LocalTls { acceptor: TlsAcceptor::from(certificates.server_config()), ca_pem: certificates.ca_pem }
    }
}

/// A CA of the test's own and a server certificate it issued for `127.0.0.1`
/// and `localhost`, in PEM for servers that read files (PostgreSQL) and as a
/// rustls configuration for those the tests run themselves.
pub struct TestCertificates {
    /// The CA's certificate, PEM: what a client must trust.
    pub ca_pem: String,
    /// The server's certificate and private key, PEM.
    pub server_pem: String,
    pub server_key_pem: String,
    server_der: Vec<u8>,
    server_key_der: Vec<u8>,
}

impl TestCertificates {
    /// A fresh CA named `who` and a server certificate it issued.
    pub fn issue(who: &str) -> TestCertificates {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, format!("{who} CA"));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        TestCertificates {
            ca_pem: ca.pem(),
            server_pem: server.pem(),
            server_key_pem: key.serialize_pem(),
            server_der: server.der().to_vec(),
            server_key_der: key.serialize_der(),
        }
    }

    /// A rustls server configuration (the `ring` provider) serving the certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.server_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone())),
            )
            .unwrap();
        Arc::new(config)
    }
}

/// Serves `target` (plain HTTP, websockets included) over https on a port of its
/// own; stops when dropped.
pub struct TlsProxy {
    pub address: SocketAddr,
    pub ca_pem: String,
    task: JoinHandle<()>,
}

impl TlsProxy {
    pub async fn start(target: SocketAddr) -> TlsProxy {
        let tls = LocalTls::issue();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the TLS proxy");
        let address = listener.local_addr().unwrap();
        let acceptor = tls.acceptor.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends its own connection.
                    let Ok(mut client) = acceptor.accept(client).await else { return };
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        TlsProxy { address, ca_pem: tls.ca_pem, task }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
