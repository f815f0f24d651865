//! TLS on the wire: an acceptor feeding a tonic server with authenticated
//! connections, and a connector for tonic channels.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::identity::{cert_info, Principal};
use super::state::TlsState;

/// How long a peer may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server knows about a connection, in every request's extensions.
#[derive(Debug, Clone)]
pub struct PeerConn {
    pub remote: Option<SocketAddr>,
    /// The identity of a verified client certificate; `None` without one
    /// (a token may still authenticate the calls).
    pub principal: Option<Principal>,
    /// Why a verified certificate names no usable identity, if so.
    pub unusable_cert: Option<String>,
}

/// A server-side TLS connection with its verified peer.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerConn,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerConn;

    fn connect_info(&self) -> PeerConn {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Closes a refused connection so that the peer reads the alert rustls sent
/// (its reason: unknown CA, expired certificate). With TLS 1.3 a client
/// whose certificate is refused already sends its first request; closing
/// with that request unread would make the kernel answer with a reset,
/// which can reach the client before the alert and leave it with "broken
/// pipe". So: FIN first, then read until the peer closes (bounded).
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// Accepts TCP connections and completes each TLS handshake on its own task
/// (a slow or hostile peer delays nobody else); yields the connections that
/// made it, for `Server::serve_with_incoming`. A failed handshake is logged
/// with its reason (unknown CA, expired certificate, plaintext client).
pub fn tls_incoming(
    listener: TcpListener,
    state: Arc<TlsState>,
) -> Result<ReceiverStream<io::Result<TlsConn>>, super::TlsError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(state.server_config()?);
    let (tx, rx) = mpsc::channel::<io::Result<TlsConn>>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Small request/response pairs: without TCP_NODELAY, Nagle plus
            // delayed ACKs add ~40 ms to a read that confirms leadership.
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp).into_fallible()).await {
                    Ok(Ok(s)) => s,
                    Ok(Err((e, tcp))) => {
                        tracing::info!(%remote, error = %e, "TLS handshake refused");
                        linger(tcp).await;
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%remote, "TLS handshake not completed within {HANDSHAKE_TIMEOUT:?}");
                        return;
                    }
                };
                let (principal, unusable_cert) = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    None => (None, None),
                    Some(leaf) => match cert_info(leaf) {
                        Ok(i) if i.principal.is_some() => (i.principal, None),
                        Ok(i) => (
                            None,
                            Some(format!(
                                "certificate {:?} names no member or role (URI SAN {}<name> or {}admin|client)",
                                i.common_name,
                                super::MEMBER_URI_PREFIX,
                                super::ROLE_URI_PREFIX
                            )),
                        ),
                        Err(e) => (None, Some(format!("certificate: {e}"))),
                    },
                };
                let conn = TlsConn { inner: tls, info: PeerConn { remote: Some(remote), principal, unusable_cert } };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// Dials TLS for tonic channels (`Endpoint::connect_with_connector_lazy`):
/// the server must chain to the CA and match the dialled host name.
/// Before dialling it rereads the files (at most once a second), so a
/// program without a reload task (the CLI, the client library) still
/// follows a rotation.
#[derive(Clone)]
pub struct TlsConnector {
    connector: tokio_rustls::TlsConnector,
    state: Arc<TlsState>,
}

impl TlsConnector {
    pub fn new(state: &Arc<TlsState>) -> Result<TlsConnector, super::TlsError> {
        Ok(TlsConnector { connector: tokio_rustls::TlsConnector::from(state.client_config()?), state: state.clone() })
    }
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send>>;

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> ConnectFuture {
        let connector = self.connector.clone();
        if let Err(e) = self.state.reload_if_changed_at_most_every(Duration::from_secs(1)) {
            tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous ones");
        }
        Box::pin(async move {
            let host =
                uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: no host")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: not a host name: {e}")))?;
            let tls = connector.connect(name, tcp).await.map_err(|e| {
                io::Error::new(e.kind(), format!("{} with {host}:{port}: {}", super::HANDSHAKE_FAILED, describe(&e)))
            })?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A handshake error in words a person acts on.
fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    match super::explain(&text) {
        Some(hint) => format!("{text} ({hint})"),
        None => text,
    }
}
