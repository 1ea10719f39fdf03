//! Reachability probe of file-injection URLs (rule C-29): an HTTP `HEAD` bounded by a timeout.
//! Only transport failures count; any HTTP status is "reachable". Unlike upstream (spec 7 R9),
//! TLS certificates are verified against the system roots.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth())
                .unwrap_or_else(|_| {
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                }),
            )
        })
        .clone()
}

async fn send<S>(io: S, uri: &http::Uri, host: &str) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = http::Request::head(path)
        .header(http::header::HOST, host)
        .header(
            http::header::USER_AGENT,
            concat!("kubedirector/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    sender
        .send_request(req)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn head_inner(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let host = uri
        .host()
        .ok_or_else(|| format!("no host in URL {url:?}"))?
        .to_string();
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => {
            return Err(format!(
                "unsupported protocol scheme {:?}",
                other.unwrap_or_default()
            ))
        }
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let tcp = tokio::net::TcpStream::connect((bare.as_str(), port))
        .await
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    if tls {
        let name = ServerName::try_from(bare).map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        send(stream, &uri, &authority).await
    } else {
        send(tcp, &uri, &authority).await
    }
}

/// `HEAD url`: `Ok` when an HTTP answer (any status) came back within `timeout`.
pub async fn head(url: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, head_inner(url)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "Head {url:?}: context deadline exceeded (Client.Timeout exceeded)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn any_http_status_is_reachable_and_a_closed_port_is_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HEAD /file.txt "));
            s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        assert_eq!(
            head(&format!("http://{addr}/file.txt"), Duration::from_secs(5)).await,
            Ok(())
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // the port is free again once the listener is dropped
        let err = head(&format!("http://{closed}/x"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.starts_with("dial tcp"), "{err}");
        assert!(head("ftp://h/x", Duration::from_secs(1)).await.is_err());
    }
}
