//! Managed PostgreSQL services require TLS: a `DATABASE_URL` with
//! `sslmode=verify-full&sslrootcert=…` reaches a cluster over TLS (rustls with
//! `ring`, no OpenSSL), and a server whose certificate cannot be verified is refused.

use std::net::TcpListener;

use shiplog_engine::postgres::{self, Cluster, ClusterOptions, ClusterTls};
use shiplog_tests::example::Scratch;
use shiplog_tests::tls::TestCertificates;

#[tokio::test]
async fn verify_full_urls_reach_a_cluster_over_tls_and_refuse_a_certificate_they_cannot_verify() {
    let certificates = TestCertificates::issue("shiplog test PostgreSQL");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let options = ClusterOptions {
        data_dir: std::env::temp_dir().join(format!("shiplog-tls-{}", uuid::Uuid::new_v4().simple())),
        ephemeral: true,
        unsafe_no_fsync: true,
        tls: Some(ClusterTls {
            port,
            certificate_pem: certificates.server_pem.clone(),
            key_pem: certificates.server_key_pem.clone(),
        }),
    };
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&options)).await.unwrap().unwrap();
    let scratch = Scratch::new("shiplog-tls");
    let ca = scratch.path().join("ca.pem");
    std::fs::write(&ca, &certificates.ca_pem).unwrap();

    let url = format!("postgres://shiplog@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}", ca.display());
    let pool = postgres::owner_pool(postgres::options_from_url(&url).unwrap(), 1).await.unwrap();
    postgres::migrate(&pool).await.unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_one(&pool).await.unwrap();
    assert!(encrypted, "the session is not encrypted");
    pool.close().await;

    // Without the CA, the system's roots cannot verify the certificate.
    let unverified = format!("postgres://shiplog@localhost:{port}/postgres?sslmode=verify-full");
    let error = postgres::owner_pool(postgres::options_from_url(&unverified).unwrap(), 1).await.unwrap_err();
    assert_eq!(error.to_string(), "error communicating with database: invalid peer certificate: UnknownIssuer");

    tokio::task::spawn_blocking(move || cluster.stop()).await.unwrap().unwrap();
}
