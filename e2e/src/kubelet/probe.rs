//! Probes: httpGet (2xx/3xx is success), tcpSocket (connects) and exec
//! (exit 0), against the pod's own address.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Timing of a probe.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

impl Timing {
    /// From a probe object, with Kubernetes' defaults.
    pub fn of(probe: &Value) -> Timing {
        let secs = |f: &str, d: u64| Duration::from_secs(probe[f].as_u64().unwrap_or(d));
        Timing {
            initial_delay: secs("initialDelaySeconds", 0),
            period: secs("periodSeconds", 10),
            timeout: secs("timeoutSeconds", 1),
            failure_threshold: probe["failureThreshold"].as_u64().unwrap_or(3) as u32,
            success_threshold: probe["successThreshold"].as_u64().unwrap_or(1) as u32,
        }
    }
}

/// A container port by number or name.
pub fn resolve_port(port: &Value, container: &Value) -> Option<u16> {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).ok();
    }
    let name = port.as_str()?;
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    container["ports"].as_array()?.iter().find(|p| p["name"] == name)?["containerPort"]
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
}

async fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect((ip, port)).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.35\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()).is_some_and(|c| (200..400).contains(&c))
}

/// Runs a probe once.
pub async fn run(probe: &Value, container: &Value, ip: Ipv4Addr, env: &[(String, String)]) -> bool {
    let timing = Timing::of(probe);
    let check = async {
        if let Some(h) = probe.get("httpGet") {
            let Some(port) = resolve_port(&h["port"], container) else { return false };
            http_get(ip, port, h["path"].as_str().unwrap_or("/")).await
        } else if let Some(t) = probe.get("tcpSocket") {
            let Some(port) = resolve_port(&t["port"], container) else { return false };
            TcpStream::connect((ip, port)).await.is_ok()
        } else if let Some(cmd) = probe["exec"]["command"].as_array() {
            let argv: Vec<&str> = cmd.iter().filter_map(Value::as_str).collect();
            let Some((prog, args)) = argv.split_first() else { return false };
            tokio::process::Command::new(prog)
                .args(args)
                .env_clear()
                .envs(env.iter().cloned())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success())
        } else {
            true
        }
    };
    tokio::time::timeout(timing.timeout.max(Duration::from_millis(500)), check).await.unwrap_or(false)
}
