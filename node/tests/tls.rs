//! TLS and authentication on the gRPC port: plaintext and foreign
//! certificates are refused, roles are enforced, a member cannot speak for
//! another, expired certificates are named as such, and certificates rotate
//! under load without a restart or a failed request.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use keyraft_api::tls::certgen::{Authority, Holder, DEFAULT_VALIDITY};
use keyraft_api::tls::Role;
use keyraft_client::local::{scratch_dir, LocalCluster};
use keyraft_client::{pb, Client, ClientOptions, TlsOptions};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tonic::Code;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
const CLIENT_TOKEN: &str = "client-token-0123456789abcdef";

fn options(c: &LocalCluster, tls: Option<TlsOptions>, token: Option<&str>) -> ClientOptions {
    let mut o = ClientOptions::new(c.endpoints());
    o.timeout = Duration::from_secs(5);
    o.attempt_timeout = Duration::from_secs(2);
    o.tls = tls;
    o.token = token.map(str::to_string);
    o
}

fn ca_only(c: &LocalCluster) -> TlsOptions {
    TlsOptions { ca: c.tls().unwrap().ca.clone(), cert: None, key: None }
}

/// A one-node cluster that also accepts the two tokens above.
async fn token_cluster(tag: &str) -> (LocalCluster, PathBuf) {
    let tokens = scratch_dir(&format!("{tag}-tokens"));
    std::fs::create_dir_all(&tokens).unwrap();
    let file = tokens.join("tokens");
    std::fs::write(&file, format!("# role name token\nadmin ops {ADMIN_TOKEN}\nclient app {CLIENT_TOKEN}\n")).unwrap();
    let c = common::cluster(tag, 1, 1, 1, &["--tokens-file", file.to_str().unwrap()]).await;
    (c, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plaintext_is_refused_when_tls_is_on_and_a_node_needs_tls_or_the_explicit_flag() {
    // Neither TLS files nor the opt-out: the node does not start, and says
    // which flags to pass.
    let dir = scratch_dir("no-tls-flags");
    let out = std::process::Command::new(common::node_bin())
        .args(["--name", "n0", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--advertise", "127.0.0.1:1"])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-cert") && err.contains("--insecure-plaintext"), "{err}");
    keyraft_client::local::remove_dir(&dir);

    let mut c = common::cluster("tls-plain", 1, 1, 1, &[]).await;
    c.client().unwrap().put("k", "v").await.unwrap();
    let start = Instant::now();
    let plain = Client::new(options(&c, None, None)).unwrap();
    let err = plain.put("k", "w").await.unwrap_err().to_string();
    assert!(err.contains("pass --ca"), "a plaintext client is told TLS may be needed: {err}");
    assert!(start.elapsed() < Duration::from_secs(20), "no hang: {:?}", start.elapsed());
    // The node logs the plaintext attempt as a refused handshake (its log
    // line may land after the client has its answer).
    let log_path = c.log_path(0);
    common::eventually("the node logs the refused handshake", Duration::from_secs(10), || async {
        let log = std::fs::read_to_string(&log_path).unwrap();
        if log.contains("TLS handshake refused") {
            Ok(())
        } else {
            Err(log.lines().rev().take(5).collect::<Vec<_>>().join("\n"))
        }
    })
    .await;
    // A token without TLS is refused by the client library itself.
    let mut o = options(&c, None, Some(ADMIN_TOKEN));
    o.tls = None;
    assert!(Client::new(o).err().unwrap().to_string().contains("only sent over TLS"));
    assert_eq!(c.client().unwrap().get("k", None).await.unwrap().as_deref(), Some(&b"v"[..]));
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_of_another_ca_are_refused_for_clients_and_nodes() {
    let mut c = common::cluster("tls-foreign", 3, 2, 3, &[]).await;
    let foreign = Authority::new("someone else's CA", DEFAULT_VALIDITY).unwrap();
    let dir = scratch_dir("foreign-ca");
    let (fca, _) = foreign.write(&dir).unwrap();
    let admin = foreign.issue(&Holder::User { role: Role::Admin, common_name: "intruder".into() }, DEFAULT_VALIDITY);
    let admin = admin.unwrap().write(&dir, "admin").unwrap();

    // A client certificate of another CA, with the right CA for the server.
    let tls = TlsOptions { ca: c.tls().unwrap().ca.clone(), cert: Some(admin.0.clone()), key: Some(admin.1.clone()) };
    let err = Client::new(options(&c, Some(tls), None)).unwrap().put("k", "v").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.to_string().contains("not signed by the CA"), "{err}");
    // Trusting another CA: the nodes' certificates are refused by the client.
    let tls = TlsOptions { ca: fca, cert: Some(admin.0.clone()), key: Some(admin.1.clone()) };
    let err = Client::new(options(&c, Some(tls), None)).unwrap().put("k", "v").await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert!(err.to_string().contains("not signed by the CA"), "{err}");

    // A node whose member certificate comes from another CA cannot join:
    // the seed refuses its handshake, and it never becomes a member.
    let ident = Holder::Member { name: "node-3".into(), hosts: vec!["127.0.0.1".into()] };
    foreign.issue(&ident, DEFAULT_VALIDITY).unwrap().write(&c.tls().unwrap().dir, "node-3").unwrap();
    let refused_before = std::fs::read_to_string(c.log_path(0)).unwrap().matches("TLS handshake refused").count();
    let seeds = vec![c.nodes[0].grpc.to_string()];
    let i = c.add_node_at(3, &seeds).unwrap();
    // Its own CA bundle is the cluster's, so it starts; its join is refused.
    let deadline = Instant::now() + common::READY;
    loop {
        let log = std::fs::read_to_string(c.log_path(0)).unwrap();
        if log.matches("TLS handshake refused").count() > refused_before {
            break;
        }
        assert!(Instant::now() < deadline, "the seed never refused the foreign node's handshake");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let members = c.client().unwrap().cluster_status().await.unwrap().cluster.unwrap().members;
    assert!(members.iter().all(|m| m.name != "node-3"), "{members:?}");
    c.kill(i);
    keyraft_client::local::remove_dir(&dir);
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_identities_are_refused_on_admin_calls_and_tokens_follow_their_role() {
    let (mut c, tokens) = token_cluster("tls-roles").await;
    let t = c.tls().unwrap();
    let addr = c.nodes[0].grpc.to_string();
    let client_cert = Client::new(options(&c, Some(t.options(&t.client)), None)).unwrap();
    client_cert.put("k", "v").await.unwrap();
    assert_eq!(client_cert.get("k", None).await.unwrap().as_deref(), Some(&b"v"[..]));
    let mut a = client_cert.admin(&addr).unwrap();
    let req = pb::SetMemberStateRequest { id: 0, name: "node-0".into(), state: "draining".into() };
    let err = a.set_member_state(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("needs an admin identity"), "{}", err.message());
    assert!(err.message().contains("client \"local-client\""), "{}", err.message());
    let err = a.rebalance(pb::RebalanceRequest { dry_run: true, max_moves: 1 }).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Not a member either: Raft is closed to it.
    let mut raft = pb::raft_client::RaftClient::new(common::channel_as(&c, Some(&t.client), 0));
    let msg = pb::RaftMessage { group: 0, payload: vec![], cluster: "test".into(), target: 0 };
    let err = raft.vote(msg).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("cluster member's certificate"), "{}", err.message());

    // No certificate and no token: unauthenticated, saying what is missing.
    let anonymous = Client::new(options(&c, Some(ca_only(&c)), None)).unwrap();
    let err = anonymous.put("k", "x").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.to_string().contains("no identity"), "{err}");

    // Tokens: the client one reads and writes but cannot administer; the
    // admin one can; an unknown one is unauthenticated.
    let by_token = Client::new(options(&c, Some(ca_only(&c)), Some(CLIENT_TOKEN))).unwrap();
    by_token.put("t", "1").await.unwrap();
    let err = by_token.admin(&addr).unwrap().set_member_state(by_token.request(req.clone())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("client \"app\""), "{}", err.message());
    let admin_token = Client::new(options(&c, Some(ca_only(&c)), Some(ADMIN_TOKEN))).unwrap();
    let undrain = pb::SetMemberStateRequest { state: "active".into(), ..req.clone() };
    admin_token.admin(&addr).unwrap().set_member_state(admin_token.request(undrain)).await.unwrap();
    let wrong = Client::new(options(&c, Some(ca_only(&c)), Some("not-a-token-0123456789"))).unwrap();
    let err = wrong.put("t", "2").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.to_string().contains("not recognised"), "{err}");
    // The admin certificate does it all.
    c.client()
        .unwrap()
        .admin(&addr)
        .unwrap()
        .rebalance(pb::RebalanceRequest { dry_run: true, max_moves: 1 })
        .await
        .unwrap();
    keyraft_client::local::remove_dir(&tokens);
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_certificate_cannot_join_or_send_raft_messages_as_another_member() {
    let mut c = common::cluster("tls-impostor", 3, 2, 3, &[]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(common::status_of(&c, i).await.node.unwrap().id);
    }
    // node-0's certificate, a vote claiming to come from node-2.
    let vote = |from: u64| pb::RaftMessage {
        group: 0,
        payload: bincode::serialize(&openraft::raft::VoteRequest::new(openraft::Vote::new(0, from), None)).unwrap(),
        cluster: "test".into(),
        target: ids[1],
    };
    let mut raft = common::raft_as(&c, 0, 1);
    let err = raft.vote(vote(ids[2])).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("\"node-2\"") && err.message().contains("\"node-0\""), "{}", err.message());
    // The same vote under its own id is heard (and, being stale, not granted).
    raft.vote(vote(ids[0])).await.expect("a member speaking for itself is heard");

    // A join under node-2's name with node-0's certificate.
    let mut admin = pb::admin_client::AdminClient::new(common::channel_as(
        &c,
        Some(&c.tls().unwrap().member("node-0", &c.opts.host).unwrap()),
        1,
    ));
    let info = pb::NodeInfo {
        id: 4242,
        name: "node-2".into(),
        advertise: "127.0.0.1:1".into(),
        cluster_name: "test".into(),
        ..Default::default()
    };
    let err = admin.join(pb::JoinRequest { node: Some(info) }).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("\"node-2\"") && err.message().contains("\"node-0\""), "{}", err.message());
    let members = c.client().unwrap().cluster_status().await.unwrap().cluster.unwrap().members;
    assert!(members.iter().all(|m| m.id != 4242), "{members:?}");
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_certificate_is_refused_with_a_message_saying_so() {
    let mut c = common::cluster("tls-expired", 1, 1, 1, &[]).await;
    let t = c.tls().unwrap();
    let now = SystemTime::now();
    let old = Holder::User { role: Role::Admin, common_name: "old".into() };
    let expired = t.authority.issue_between(&old, now - DEFAULT_VALIDITY, now - Duration::from_secs(3600)).unwrap();
    let dir = scratch_dir("expired");
    let files = expired.write(&dir, "old").unwrap();
    // Attempts long enough for a handshake on a loaded machine; a refusal
    // must still come back on the first one, not after the retries.
    let mut o = options(&c, Some(t.options(&files)), None);
    o.timeout = Duration::from_secs(30);
    o.attempt_timeout = Duration::from_secs(10);
    let start = Instant::now();
    let err = Client::new(o).unwrap().put("k", "v").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10), "refused at once, not retried: {:?}", start.elapsed());
    let log_path = c.log_path(0);
    common::eventually("the node logs the expired certificate", Duration::from_secs(10), || async {
        let log = std::fs::read_to_string(&log_path).unwrap();
        match log.contains("TLS handshake refused") && log.contains("xpired") {
            true => Ok(()),
            false => Err(log.lines().rev().take(5).collect::<Vec<_>>().join("\n")),
        }
    })
    .await;
    keyraft_client::local::remove_dir(&dir);
    common::cleanup(&mut c);
}

/// The certificate node `i` presents to a new TLS connection.
async fn served_certificate(c: &LocalCluster, i: usize) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&c.tls().unwrap().ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(keyraft_api::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(c.nodes[i].grpc).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(c.nodes[i].grpc.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_rotate_under_load_without_restart_or_failed_request() {
    let mut c = common::cluster("tls-rotate", 3, 4, 3, &["--tls-reload-secs", "1"]).await;
    let pids: Vec<u32> = (0..3).map(|i| c.pid(i).unwrap()).collect();
    let before = served_certificate(&c, 0).await;
    let (stop, acked, failures) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::<String>::new())));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (stop, acked, failures, opts) = (stop.clone(), acked.clone(), failures.clone(), c.client_options());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A fresh client every few writes: new handshakes all along.
                let client = Client::new(opts.clone()).unwrap();
                for _ in 0..5 {
                    match client.put(format!("w{w}-{n}"), n.to_string()).await {
                        Ok(_) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.lock().unwrap().push(format!("w{w}-{n}: {e}")),
                    }
                    n += 1;
                }
            }
            n
        }));
    }
    while acked.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Re-issue every node's certificate and the admin client's, in place.
    let t = c.tls().unwrap();
    let mut fresh = Vec::new();
    for n in &c.nodes {
        let holder = Holder::Member { name: n.name.clone(), hosts: vec![c.opts.host.clone(), "localhost".into()] };
        let issued = t.authority.issue(&holder, DEFAULT_VALIDITY).unwrap();
        issued.write(&t.dir, &n.name).unwrap();
        fresh.push(CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap().to_vec());
    }
    let admin = Holder::User { role: Role::Admin, common_name: "local-admin".into() };
    t.authority.issue(&admin, DEFAULT_VALIDITY).unwrap().write(&t.dir, "admin").unwrap();
    assert_ne!(before, fresh[0], "a new certificate was issued");
    for (i, want) in fresh.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let served = served_certificate(&c, i).await;
            if &served == want {
                break;
            }
            assert!(Instant::now() < deadline, "node {i} still serves its old certificate");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let at_rotation = acked.load(Ordering::Relaxed);
    while acked.load(Ordering::Relaxed) < at_rotation + 50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut written = Vec::new();
    for (w, h) in workers.into_iter().enumerate() {
        written.push((w, h.await.unwrap()));
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "requests failed during the rotation: {failures:?}");
    // Every acknowledged write is there, and no node restarted.
    let reader = c.client().unwrap();
    for (w, n) in written {
        for k in (0..n).step_by(7) {
            assert_eq!(
                reader.get(format!("w{w}-{k}"), None).await.unwrap().as_deref(),
                Some(k.to_string().as_bytes()),
                "w{w}-{k}"
            );
        }
    }
    assert_eq!((0..3).map(|i| c.pid(i).unwrap()).collect::<Vec<_>>(), pids, "no node restarted");
    let log = std::fs::read_to_string(c.log_path(0)).unwrap();
    assert!(log.contains("TLS certificates reloaded"), "{log}");
    common::cleanup(&mut c);
}
