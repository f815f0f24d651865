//! CPU time and resident memory of the member processes, from /proc.

use std::fs;

use crate::BenchError;

/// The fields of /proc/PID/stat the benchmark uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub ppid: u32,
    /// utime + stime of every thread of the process, in clock ticks.
    pub cpu_ticks: u64,
}

/// Parses /proc/PID/stat. The command name is in parentheses and may hold
/// spaces and parentheses itself, so the fields are counted from the last ')'.
pub fn parse_stat(s: &str) -> Result<Stat, String> {
    let open = s.find('(').ok_or("no '(' before the command name")?;
    let close = s.rfind(')').ok_or("no ')' after the command name")?;
    if close < open {
        return Err("')' before '('".into());
    }
    let comm = s[open + 1..close].to_string();
    // After ')': state(3) ppid(4) ... utime(14) stime(15); index 0 is field 3.
    let rest: Vec<&str> = s[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        let v = rest.get(n - 3).ok_or_else(|| format!("field {n} missing"))?;
        v.parse().map_err(|e| format!("field {n} {v:?}: {e}"))
    };
    Ok(Stat { comm, ppid: field(4)? as u32, cpu_ticks: field(14)? + field(15)? })
}

/// VmRSS of /proc/PID/status, in bytes; `None` for a process without
/// memory (a zombie) or a line that does not parse.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let kb: u64 = parts.next()?.parse().ok()?;
    (parts.next()? == "kB").then_some(kb * 1024)
}

pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the system; no memory is touched.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

pub fn read_stat(pid: u32) -> Result<Stat, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let s = fs::read_to_string(&path).map_err(BenchError::io(path.clone()))?;
    parse_stat(&s).map_err(|why| BenchError::Proc { path, why })
}

pub fn read_vm_rss(pid: u32) -> Option<u64> {
    parse_vm_rss(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Child processes of this process whose command name is `comm`, by pid.
/// Other processes of the same name on a shared machine are not ours.
pub fn children_named(comm: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| read_stat(*pid).is_ok_and(|s| s.ppid == me && s.comm == comm))
        .collect();
    pids.sort_unstable();
    pids
}

/// CPU seconds per 1,000 operations from the summed ticks of all members
/// before and after a run.
pub fn cpu_seconds_per_1k_ops(before: u64, after: u64, ticks_per_second: u64, ops: u64) -> Option<f64> {
    (ops > 0 && after >= before).then(|| (after - before) as f64 / ticks_per_second as f64 / ops as f64 * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line of /proc/PID/stat (a tokio runtime), with a command name
    // that holds a space and a ')'.
    const STAT: &str = "4242 (keyraft-no) de) S 4100 4242 4100 0 -1 4194560 12015 0 0 0 731 265 0 0 20 0 \
        12 0 123456 987654321 11223 18446744073709551615 1 1 0 0 0 0 0 4096 17663 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s.comm, "keyraft-no) de");
        assert_eq!(s.ppid, 4100);
        assert_eq!(s.cpu_ticks, 731 + 265);
    }

    #[test]
    fn a_truncated_stat_line_is_an_error_naming_the_field() {
        let e = parse_stat("1 (etcd) S 0 1 1 0 -1 4194560 12015 0 0 0 731").unwrap_err();
        assert_eq!(e, "field 15 missing");
        assert!(parse_stat("1 etcd S 0").is_err());
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tetcd\nVmPeak:\t  900000 kB\nVmRSS:\t   45312 kB\nRssAnon:\t 30000 kB\n";
        assert_eq!(parse_vm_rss(status), Some(45312 * 1024));
        assert_eq!(parse_vm_rss("Name:\tzombie\nState:\tZ (zombie)\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn cpu_per_thousand_operations() {
        // 250 ticks at 100 per second = 2.5 s over 5,000 ops = 0.5 s per 1,000.
        assert_eq!(cpu_seconds_per_1k_ops(1000, 1250, 100, 5000), Some(0.5));
        assert_eq!(cpu_seconds_per_1k_ops(1000, 1250, 100, 0), None);
        assert_eq!(cpu_seconds_per_1k_ops(1250, 1000, 100, 10), None);
    }

    #[test]
    fn this_process_has_a_stat_line_and_memory() {
        let s = read_stat(std::process::id()).unwrap();
        assert_eq!(s.ppid as i32, unsafe { libc::getppid() });
        assert!(read_vm_rss(std::process::id()).unwrap() > 0);
    }
}
