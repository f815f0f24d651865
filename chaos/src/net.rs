//! Each node in its own network namespace, joined to the test's namespace by
//! a veth pair on a bridge; cuts are iptables DROP rules inside the
//! namespaces, so a cut is a real dropped packet. Clients stay in the root
//! namespace and reach nodes through the bridge (address `.1`), which no
//! node-to-node cut touches.
//!
//! Names carry a per-process prefix (`kc<pid hex>`) so parallel runs do not
//! collide; a run also removes what a dead run of another process left.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

use crate::error::ChaosError;

/// Runs a command, failing with its stderr.
pub(crate) fn sh(cmd: &str, args: &[&str]) -> Result<String, ChaosError> {
    let out = Command::new(cmd).args(args).output().map_err(ChaosError::io(format!("run {cmd}")))?;
    if !out.status.success() {
        return Err(ChaosError::Command {
            cmd: format!("{cmd} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why the network family cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: network namespaces and iptables need root".into());
    }
    if let Err(e) = sh("ip", &["netns", "list"]) {
        return Some(format!("`ip netns` unavailable ({e}); run hack/chaos-deps.sh"));
    }
    if let Err(e) = sh("iptables", &["--version"]) {
        return Some(format!("iptables unavailable ({e}); run hack/chaos-deps.sh"));
    }
    None
}

pub struct Net {
    prefix: String,
    subnet: u8,
    nodes: usize,
    /// Directed cuts in force: packets from .0 to .1 are dropped.
    cuts: BTreeSet<(usize, usize)>,
    clients_cut: BTreeSet<usize>,
}

impl Net {
    /// Namespaces, veth pairs and a bridge for `nodes` nodes.
    pub fn create(nodes: usize) -> Result<Net, ChaosError> {
        remove_stale();
        let prefix = format!("kc{:x}", std::process::id());
        let used = sh("ip", &["-o", "-4", "addr"]).unwrap_or_default();
        let subnet = (1..=250u8)
            .map(|i| ((std::process::id() as usize + i as usize) % 250 + 1) as u8)
            .find(|s| !used.contains(&format!("10.77.{s}.")))
            .ok_or_else(|| ChaosError::Cluster("no free 10.77.x.0/24 subnet".into()))?;
        // From here on, Drop cleans up whatever was made.
        let net = Net { prefix, subnet, nodes, cuts: BTreeSet::new(), clients_cut: BTreeSet::new() };
        let br = net.bridge();
        sh("ip", &["link", "add", &br, "type", "bridge"])?;
        sh("ip", &["addr", "add", &format!("{}/24", net.client_ip()), "dev", &br])?;
        sh("ip", &["link", "set", &br, "up"])?;
        for i in 0..nodes {
            let (ns, host, peer) = (net.ns(i), format!("{}v{i}", net.prefix), format!("{}p{i}", net.prefix));
            sh("ip", &["netns", "add", &ns])?;
            sh("ip", &["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
            sh("ip", &["link", "set", &peer, "netns", &ns])?;
            sh("ip", &["link", "set", &host, "master", &br])?;
            sh("ip", &["link", "set", &host, "up"])?;
            sh("ip", &["-n", &ns, "addr", "add", &format!("{}/24", net.ip(i)), "dev", &peer])?;
            sh("ip", &["-n", &ns, "link", "set", &peer, "up"])?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{}b", self.prefix)
    }

    /// The namespace of node `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 10 + i as u8)
    }

    /// The address clients (and this process) use on the bridge.
    pub fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    fn iptables(&self, i: usize, args: &[&str]) -> Result<(), ChaosError> {
        let ns = self.ns(i);
        let mut all = vec!["netns", "exec", &ns, "iptables", "-w"];
        all.extend_from_slice(args);
        sh("ip", &all).map(drop)
    }

    /// Drops every packet from node `from` to node `to` (at `to`'s door).
    pub fn cut(&mut self, from: usize, to: usize) -> Result<(), ChaosError> {
        if self.cuts.insert((from, to)) {
            self.iptables(to, &["-A", "INPUT", "-s", &self.ip(from).to_string(), "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Drops every packet from clients to node `i` (nodes still talk).
    pub fn cut_clients(&mut self, i: usize) -> Result<(), ChaosError> {
        if self.clients_cut.insert(i) {
            self.iptables(i, &["-A", "INPUT", "-s", &self.client_ip().to_string(), "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<(), ChaosError> {
        for i in 0..self.nodes {
            self.iptables(i, &["-F", "INPUT"])?;
        }
        self.cuts.clear();
        self.clients_cut.clear();
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it
        // the other end.
        for i in 0..self.nodes {
            let _ = sh("ip", &["netns", "del", &self.ns(i)]);
        }
        let _ = sh("ip", &["link", "del", &self.bridge()]);
    }
}

/// Removes namespaces and bridges of runs whose process is gone.
fn remove_stale() {
    let Ok(list) = sh("ip", &["netns", "list"]) else { return };
    let mut dead = BTreeSet::new();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix("kc") else { continue };
        let Some((pid, _)) = rest.split_once('n') else { continue };
        let Ok(pid) = u32::from_str_radix(pid, 16) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = sh("ip", &["netns", "del", name]);
            dead.insert(format!("kc{pid:x}b"));
        }
    }
    for br in dead {
        let _ = sh("ip", &["link", "del", &br]);
    }
}
