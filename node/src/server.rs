//! Starts a node's gRPC and HTTP servers and stops them on a signal.

use keyraft_api::limits::MAX_MESSAGE_BYTES;
use keyraft_api::pb::admin_server::AdminServer;
use keyraft_api::pb::kv_server::KvServer;
use keyraft_api::pb::raft_server::RaftServer;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use std::sync::Arc;

use crate::auth::{Auth, Guard, Tokens};
use crate::config::Config;
use crate::node::Node;
use crate::service::{admin::AdminService, kv::KvService, raft::RaftService};

/// Runs a node until SIGTERM or SIGINT, then shuts its groups down cleanly.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let grpc_listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: cannot bind: {e}", cfg.listen))?;
    let http_listener = TcpListener::bind(cfg.http_listen)
        .await
        .map_err(|e| anyhow::anyhow!("--http-listen {}: cannot bind: {e}", cfg.http_listen))?;
    let node = Node::open(cfg).await?;
    let reload = std::time::Duration::from_secs(node.cfg.tls_reload_secs);
    let auth = match &node.tls {
        Some(tls) => {
            tls.spawn_reloader(reload);
            let tokens = node.cfg.tokens_file.clone().map(Tokens::load).transpose().map_err(anyhow::Error::msg)?;
            if let Some(t) = &tokens {
                t.spawn_reloader(reload);
            }
            let own = tls.own();
            tracing::info!(
                ca = %tls.files().ca.display(), cert_not_after = own.as_ref().map_or(0, |c| c.not_after),
                tokens = tokens.is_some(), "TLS on: clients and peers must authenticate"
            );
            Some(Arc::new(Auth { tokens }))
        }
        None => {
            for _ in 0..3 {
                tracing::warn!(
                    "!!! --insecure-plaintext: gRPC is served WITHOUT TLS and WITHOUT authentication; \
                     anyone who reaches {} can read and write all data and reconfigure the cluster !!!",
                    node.cfg.listen
                );
            }
            None
        }
    };
    let id = node.identity();
    tracing::info!(
        name = %id.name, node_id = id.node_id, incarnation = %id.incarnation, cluster = %id.cluster_name,
        grpc = %node.cfg.listen, http = %node.cfg.http_listen, advertise = %node.cfg.advertise,
        "keyraft-node started"
    );
    tokio::spawn(node.clone().run_membership_loop());
    tokio::spawn(node.clone().run_placement_loop());
    if !node.cfg.join.is_empty() {
        tokio::spawn(node.clone().join_via_seeds(node.cfg.join.clone()));
    }

    let shutdown = async {
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutting down");
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let router = tonic::transport::Server::builder()
        .add_service(Guard::new(
            KvServer::new(KvService { node: node.clone() })
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            auth.clone(),
        ))
        .add_service(Guard::new(
            RaftServer::new(RaftService { node: node.clone() })
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            auth.clone(),
        ))
        .add_service(Guard::new(AdminServer::new(AdminService { node: node.clone() }), auth));
    let stopped = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.changed().await;
        }
    };
    let grpc: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match &node.tls {
            Some(tls) => {
                let incoming = keyraft_api::tls::tls_incoming(grpc_listener, tls.clone())?;
                Box::pin(router.serve_with_incoming_shutdown(incoming, stopped))
            }
            None => {
                // Small request/response pairs: without TCP_NODELAY, Nagle plus
                // delayed ACKs add ~40 ms to a read that confirms leadership.
                let incoming =
                    tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(grpc_listener), |s| {
                        if let Ok(s) = &s {
                            let _ = s.set_nodelay(true);
                        }
                        s
                    });
                Box::pin(router.serve_with_incoming_shutdown(incoming, stopped))
            }
        };
    let http = axum::serve(http_listener, crate::http::router(node.clone())).with_graceful_shutdown({
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.changed().await;
        }
    });
    let grpc_task = tokio::spawn(grpc);
    let http_task = tokio::spawn(async move { http.await });
    shutdown.await;
    let _ = stop_tx.send(true);
    node.groups.shutdown().await;
    let _ = node.wal.sync().await;
    node.wal.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), grpc_task).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), http_task).await;
    Ok(())
}
