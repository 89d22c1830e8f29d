//! A small HTTPS server (tokio + rustls) whose certificate follows a
//! Secret volume: `tls.crt` and `tls.key`, as cert-manager writes them.
//! When the Secret is renewed, the next handshake gets the new pair; no
//! restart, no torn pair.
//!
//! ```text
//! cargo run --example https_server -- /path/to/volume [ADDRESS] [RUN_FOR]
//! curl --cacert ca.crt https://localhost:8443/
//! ```

use std::{sync::Arc, time::Duration};

use configmapwatch::tls::LiveCert;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::{TlsAcceptor, rustls};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/etc/tls".into());
    let address = args.next().unwrap_or_else(|| "127.0.0.1:8443".into());
    let run_for = match args.next() {
        Some(d) => humantime::parse_duration(&d)?,
        None => Duration::from_secs(u32::MAX.into()),
    };

    // Starting blocks until the first good pair: do it off the runtime.
    let cert = tokio::task::spawn_blocking(move || {
        LiveCert::watch(dir)
            .interval(Duration::from_millis(200))
            .on_change(|cert, event| {
                let leaf = &cert.leaf;
                println!(
                    "certificate {} serial {} (until {}) from {}",
                    leaf.subject,
                    leaf.serial,
                    configmapwatch::event::rfc3339(leaf.not_after),
                    event.version
                );
            })
            .on_error(|event| println!("refused: {}", event.error.as_deref().unwrap_or("?")))
            .start(Duration::from_secs(30))
    })
    .await??;

    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(cert.clone()));
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(&address).await?;
    println!("listening on https://{}", listener.local_addr()?);

    let serve = async {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, cert) = (acceptor.clone(), cert.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                // Enough of HTTP/1.1 for curl: read the request head,
                // answer, close.
                let mut head = [0u8; 4096];
                let _ = tls.read(&mut head).await;
                let body = format!(
                    "hello; current certificate serial {}\n",
                    cert.get().leaf.serial
                );
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    };
    let _ = tokio::time::timeout(run_for, serve).await;
    Ok(())
}
