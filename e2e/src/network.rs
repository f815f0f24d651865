//! Loopback addresses: each simulator leases a second octet N (127.N.0.0/16,
//! N in 100..=199) through a lock file, so simulators in parallel test
//! processes never hand out the same pod address. Pods get 127.N.x.y: a
//! new one per incarnation (pod uid) as on a real cluster, or, when asked,
//! the same one per namespace/name. ClusterIP Services 127.N.255.z, Nodes
//! 127.N.254.z.

use std::collections::HashMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use crate::error::Error;

/// Directory of the subnet lock files.
const LOCK_DIR: &str = "/tmp/keyraft-k8s-sim";

/// A leased 127.N.0.0/16; released when dropped (the lock file closes).
pub struct SubnetLease {
    octet: u8,
    _lock: File,
    pods: Mutex<Pods>,
}

/// Pod addresses handed out: the current one per namespace/name (with the
/// uid it was given to) and how many were given.
#[derive(Default)]
struct Pods {
    current: HashMap<(String, String), (String, Ipv4Addr)>,
    given: usize,
}

/// Addresses per subnet: 127.N.0.1 .. 127.N.249.250 (x < 250 leaves the
/// Node and Service ranges alone).
const POD_ADDRESSES: usize = 250 * 250;

impl SubnetLease {
    /// Leases the first free subnet.
    pub fn acquire() -> Result<Self, Error> {
        std::fs::create_dir_all(LOCK_DIR).map_err(|e| Error::io(format!("creating {LOCK_DIR}"), e))?;
        for octet in 100..=199u8 {
            let path = format!("{LOCK_DIR}/subnet-{octet}.lock");
            let file = File::create(&path).map_err(|e| Error::io(format!("opening {path}"), e))?;
            // SAFETY: flock on a valid, owned file descriptor.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(SubnetLease { octet, _lock: file, pods: Mutex::new(Pods::default()) });
            }
        }
        Err(Error::NoFreeSubnet)
    }

    /// The leased second octet.
    pub fn octet(&self) -> u8 {
        self.octet
    }

    /// `127.N.255.`: the ClusterIP prefix.
    pub fn service_prefix(&self) -> String {
        format!("127.{}.255.", self.octet)
    }

    /// The address of the i-th Node.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, self.octet, 254, (i % 250) as u8 + 1)
    }

    /// The address of pod incarnation `uid`: the one it already has, the
    /// namespace/name's previous address when `stable`, else a fresh one.
    pub fn pod_ip(&self, namespace: &str, name: &str, uid: &str, stable: bool) -> Ipv4Addr {
        let mut pods = self.pods.lock().unwrap();
        let key = (namespace.to_string(), name.to_string());
        if let Some((u, ip)) = pods.current.get(&key) {
            if u == uid || stable {
                let ip = *ip;
                pods.current.insert(key, (uid.to_string(), ip));
                return ip;
            }
        }
        let n = pods.given % POD_ADDRESSES;
        pods.given += 1;
        let ip = Ipv4Addr::new(127, self.octet, (n / 250) as u8, (n % 250) as u8 + 1);
        pods.current.insert(key, (uid.to_string(), ip));
        ip
    }

    /// A pod's current address if it has one.
    pub fn existing_pod_ip(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        self.pods.lock().unwrap().current.get(&(namespace.to_string(), name.to_string())).map(|(_, ip)| *ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_exclusive_and_pod_ips_per_incarnation() {
        let a = SubnetLease::acquire().unwrap();
        let b = SubnetLease::acquire().unwrap();
        assert_ne!(a.octet(), b.octet());
        let ip = a.pod_ip("ns", "p-0", "u1", false);
        assert_eq!(a.pod_ip("ns", "p-0", "u1", false), ip);
        assert_ne!(a.pod_ip("ns", "p-1", "u2", false), ip);
        assert_eq!(ip.octets()[1], a.octet());
        let again = a.pod_ip("ns", "p-0", "u3", false);
        assert_ne!(again, ip, "a re-created pod gets a new address");
        assert_eq!(a.pod_ip("ns", "p-0", "u4", true), again, "stable addresses on request");
    }
}
