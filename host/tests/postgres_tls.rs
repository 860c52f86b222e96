//! PostgreSQL over TLS. The shared test server speaks no TLS (and is not
//! ours to reconfigure), so a TLS-terminating proxy stands in front of it:
//! it answers PostgreSQL's SSLRequest, completes the handshake with a
//! certificate made here, and refuses any client that does not ask for TLS.

use std::sync::Arc;
use std::time::Duration;

use remedy::capabilities::database::backend::DatabaseBackend;
use remedy::capabilities::database::postgres::Postgres;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A TLS-only front for 127.0.0.1:5432; answers its address and the PEM
/// of the CA that signed its certificate.
async fn tls_front() -> (std::net::SocketAddr, String) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let ca_pem = made.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![made.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 8];
                if client.read_exact(&mut first).await.is_err() || first != SSL_REQUEST {
                    return; // no TLS, no service
                }
                client.write_all(b"S").await.unwrap();
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let mut upstream = tokio::net::TcpStream::connect("127.0.0.1:5432")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    (addr, ca_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_connects_over_verified_tls() {
    let (addr, ca_pem) = tls_front().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let url = format!("postgres://postgres@{addr}/test?sslmode=require");
    let timeout = Duration::from_secs(5);

    let db = Postgres::new(&url, timeout).unwrap().with_ca(&ca).unwrap();
    let stats = db.stats().await.expect("a query over TLS");
    assert!(stats.max_connections > 0);

    // Without a CA, as libpq's `require`: encrypted, identity unchecked.
    let encrypt_only = Postgres::new(&url, timeout).unwrap();
    encrypt_only.stats().await.expect("encrypted without a CA");

    // With a CA, the certificate must chain to it: another CA is refused.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let wrong = dir.path().join("wrong.pem");
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    let verified = Postgres::new(&url, timeout)
        .unwrap()
        .with_ca(&wrong)
        .unwrap();
    let err = verified.stats().await.unwrap_err().to_string();
    assert!(
        err.contains("cannot connect") && err.contains("certificate"),
        "{err}"
    );

    // The config names a bad CA file precisely.
    let bad = dir.path().join("not-a-ca.pem");
    std::fs::write(&bad, "nothing here").unwrap();
    let text = format!("[backends]\ndatabase_ca = \"{}\"\n", bad.display());
    let e = remedy::Config::parse(&text, std::path::Path::new("remedy.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("backends.database_ca") && e.contains("no PEM certificate"),
        "{e}"
    );
}

/// The PostgreSQL store over TLS (the front refuses plain connections):
/// verified against `server.store_ca`, refused with another CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_speaks_tls_and_verifies_its_ca() {
    use remedy::store::{PgStore, Replica, Store};
    let (addr, ca_pem) = tls_front().await;
    let db = common::Db::new("tls").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let ca = remedy::config::CaFile::read(&ca).unwrap();
    let url = format!("postgres://postgres@{addr}/{}?sslmode=require", db.name);
    let me = || Replica::new("tls".into(), Duration::from_secs(5));
    let store = PgStore::connect(&url, me(), Some(&ca))
        .await
        .expect("over TLS");
    assert!(store.get_run("none").await.unwrap().is_none());
    store.leave().await.unwrap();

    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let wrong = dir.path().join("wrong.pem");
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    let wrong = remedy::config::CaFile::read(&wrong).unwrap();
    let err = PgStore::connect(&url, me(), Some(&wrong))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("certificate"), "{err}");
}

mod common;
