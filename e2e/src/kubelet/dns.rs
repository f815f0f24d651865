//! Cluster DNS through the hosts file.
//!
//! The node binary resolves peer names with the system resolver, so the
//! simulator writes `<pod>.<service>.<ns>.svc[.cluster.local]` (pods of
//! headless Services) and `<service>.<ns>[.svc[.cluster.local]]` (ClusterIP
//! Services) into `/etc/hosts`, inside a block marked with the simulator's
//! subnet, rewritten in place under a lock file whenever the names change
//! and removed on shutdown. Several simulators share the file, each
//! owning its own block.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::error::Error;

const LOCK: &str = "/tmp/keyraft-k8s-sim/hosts.lock";

/// This simulator's block in a hosts file.
pub struct HostsBlock {
    path: PathBuf,
    id: String,
    last: Option<String>,
}

fn with_lock<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    std::fs::create_dir_all("/tmp/keyraft-k8s-sim").map_err(|e| Error::io("creating the lock directory", e))?;
    let lock = File::create(LOCK).map_err(|e| Error::io(format!("opening {LOCK}"), e))?;
    // SAFETY: flock on a valid, owned descriptor; released when `lock` closes.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    Ok(f())
}

impl HostsBlock {
    /// The block of simulator `id` in `path`.
    pub fn new(path: PathBuf, id: String) -> Self {
        HostsBlock { path, id, last: None }
    }

    fn markers(&self) -> (String, String) {
        (format!("# BEGIN keyraft-k8s-sim {}", self.id), format!("# END keyraft-k8s-sim {}", self.id))
    }

    fn rewrite(&self, block: Option<&str>) -> Result<(), Error> {
        let (begin, end) = self.markers();
        with_lock(|| {
            let current = std::fs::read_to_string(&self.path).unwrap_or_default();
            let mut out = String::new();
            let mut inside = false;
            for line in current.lines() {
                if line == begin {
                    inside = true;
                } else if line == end {
                    inside = false;
                } else if !inside {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            if let Some(b) = block {
                out.push_str(&format!("{begin}\n{b}{end}\n"));
            }
            // In place: /etc/hosts is often a bind mount that cannot be renamed over.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&self.path)
                .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))?;
            f.write_all(out.as_bytes()).map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
        })?
    }

    /// Publishes `(address, name)` entries, if they changed.
    pub fn update(&mut self, mut entries: Vec<(String, String)>) -> Result<(), Error> {
        entries.sort();
        entries.dedup();
        let block: String = entries.iter().map(|(ip, name)| format!("{ip} {name}\n")).collect();
        if self.last.as_deref() == Some(block.as_str()) {
            return Ok(());
        }
        self.rewrite(Some(&block))?;
        self.last = Some(block);
        Ok(())
    }

    /// Removes the block.
    pub fn remove(&mut self) {
        if self.last.take().is_some() {
            if let Err(e) = self.rewrite(None) {
                tracing::warn!("removing the DNS block: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_replaced_and_removed_leaving_other_lines() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "127.0.0.1 localhost\n").unwrap();
        let mut a = HostsBlock::new(f.path().into(), "a".into());
        let mut b = HostsBlock::new(f.path().into(), "b".into());
        a.update(vec![("127.1.0.1".into(), "x.svc".into())]).unwrap();
        b.update(vec![("127.2.0.1".into(), "y.svc".into())]).unwrap();
        a.update(vec![("127.1.0.2".into(), "x.svc".into())]).unwrap();
        let text = std::fs::read_to_string(f.path()).unwrap();
        assert!(text.contains("127.1.0.2 x.svc") && !text.contains("127.1.0.1"));
        assert!(text.contains("127.2.0.1 y.svc"));
        a.remove();
        b.remove();
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), "127.0.0.1 localhost\n");
    }
}
