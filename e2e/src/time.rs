//! Timestamps as Kubernetes writes them.

/// Now, RFC 3339 with second precision (`2024-01-02T03:04:05Z`).
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Now, with microseconds (`MicroTime`, as in Lease renewTime).
pub fn now_micro() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// Now plus `secs` seconds, RFC 3339.
pub fn after(secs: i64) -> String {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs);
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Seconds since an RFC 3339 timestamp (0 if unparsable or in the future).
pub fn age_secs(ts: &str) -> i64 {
    ts.parse::<jiff::Timestamp>().map(|t| jiff::Timestamp::now().duration_since(t).as_secs().max(0)).unwrap_or(0)
}

/// Human age as kubectl prints it (`5s`, `3m`, `2h`, `4d`).
pub fn human_age(ts: &str) -> String {
    let s = age_secs(ts);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
