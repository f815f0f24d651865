//! The figures of a row and the table that puts both systems side by side.

use std::fmt::Write;

use hdrhistogram::Histogram;

/// What one system did in one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Operations that succeeded in the measured time.
    pub ops: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// utime + stime of all members per 1,000 operations.
    pub cpu_per_1k: Option<f64>,
    /// Peak VmRSS of each member over the row.
    pub rss_bytes: Vec<u64>,
    pub errors: u64,
}

impl Figures {
    /// `latency` in microseconds.
    pub fn new(
        latency: &Histogram<u64>,
        errors: u64,
        seconds: f64,
        cpu_per_1k: Option<f64>,
        rss_bytes: Vec<u64>,
    ) -> Self {
        let ms = |q: f64| if latency.is_empty() { 0.0 } else { latency.value_at_quantile(q) as f64 / 1000.0 };
        Figures {
            ops: latency.len(),
            seconds,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            cpu_per_1k,
            rss_bytes,
            errors,
        }
    }

    pub fn ops_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// One load, both systems (a system left out of the run is `None`).
#[derive(Debug, Clone)]
pub struct TableRow {
    pub label: String,
    pub etcd: Option<Figures>,
    pub keyraft: Option<Figures>,
}

impl TableRow {
    /// Keyraft's throughput over etcd's.
    pub fn ratio(&self) -> Option<f64> {
        let (e, k) = (self.etcd.as_ref()?, self.keyraft.as_ref()?);
        (e.ops_per_second() > 0.0).then(|| k.ops_per_second() / e.ops_per_second())
    }
}

/// 12345.6 -> "12,346".
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Three significant digits or so: 0.934 -> "0.93", 15.04 -> "15.0", 127.9 -> "128".
pub fn millis(v: f64) -> String {
    match v {
        v if v < 10.0 => format!("{v:.2}"),
        v if v < 100.0 => format!("{v:.1}"),
        v => format!("{v:.0}"),
    }
}

const NONE: &str = "–";

fn cell(f: Option<&Figures>, show: impl Fn(&Figures) -> String) -> String {
    f.map_or_else(|| NONE.to_string(), show)
}

fn latency(f: &Figures) -> String {
    format!("{} / {} / {}", millis(f.p50_ms), millis(f.p99_ms), millis(f.p999_ms))
}

fn cpu(f: &Figures) -> String {
    f.cpu_per_1k.map_or_else(|| NONE.to_string(), |c| format!("{c:.3}"))
}

fn rss(f: &Figures) -> String {
    let mib: Vec<String> = f.rss_bytes.iter().map(|b| format!("{:.0}", *b as f64 / (1024.0 * 1024.0))).collect();
    mib.join(" / ")
}

/// The table in Markdown, then a line per row that had failed operations.
pub fn render(rows: &[TableRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| load | etcd ops/s | Keyraft ops/s | ratio | etcd p50 / p99 / p999 ms | Keyraft p50 / p99 / p999 ms \
         | etcd CPU s per 1k ops | Keyraft CPU s per 1k ops | etcd RSS MiB per member | Keyraft RSS MiB per member |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        let (e, k) = (r.etcd.as_ref(), r.keyraft.as_ref());
        let ops = |f: &Figures| thousands(f.ops_per_second());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            cell(e, ops),
            cell(k, ops),
            r.ratio().map_or_else(|| NONE.to_string(), |x| format!("{x:.2}")),
            cell(e, latency),
            cell(k, latency),
            cell(e, cpu),
            cell(k, cpu),
            cell(e, rss),
            cell(k, rss),
        );
    }
    for r in rows {
        for (name, f) in [("etcd", &r.etcd), ("Keyraft", &r.keyraft)] {
            if let Some(f) = f.as_ref().filter(|f| f.errors > 0) {
                let _ = writeln!(s, "\n{name}, {}: {} operations failed", r.label, f.errors);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::histogram;

    fn figures(ops_per_second: u64, p50_ms: f64) -> Figures {
        Figures {
            ops: ops_per_second * 10,
            seconds: 10.0,
            p50_ms,
            p99_ms: 15.04,
            p999_ms: 127.94,
            cpu_per_1k: Some(0.4567),
            rss_bytes: vec![45 << 20, 46 << 20, (44 << 20) + 1],
            errors: 0,
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram_in_milliseconds() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us * 100).unwrap(); // 0.1 ms .. 100 ms, uniform
        }
        let f = Figures::new(&h, 3, 2.0, None, vec![]);
        assert_eq!(f.ops, 1000);
        assert_eq!(f.ops_per_second(), 500.0);
        assert!((f.p50_ms - 50.0).abs() < 0.1, "{}", f.p50_ms);
        assert!((f.p99_ms - 99.0).abs() < 0.1, "{}", f.p99_ms);
        assert!((f.p999_ms - 99.9).abs() < 0.1, "{}", f.p999_ms);
        assert_eq!(f.errors, 3);
        let empty = Figures::new(&histogram(), 0, 0.0, None, vec![]);
        assert_eq!((empty.ops_per_second(), empty.p99_ms), (0.0, 0.0));
    }

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1038.2), "1,038");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(millis(0.934), "0.93");
        assert_eq!(millis(15.04), "15.0");
        assert_eq!(millis(127.94), "128");
    }

    #[test]
    fn the_table_has_both_systems_and_the_ratio_per_row() {
        let rows = vec![
            TableRow {
                label: "1 client, writes".into(),
                etcd: Some(figures(1000, 0.934)),
                keyraft: Some(figures(800, 1.18)),
            },
            TableRow { label: "16 clients, writes".into(), etcd: None, keyraft: Some(figures(2610, 3.0)) },
        ];
        let t = render(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("| load | etcd ops/s | Keyraft ops/s | ratio |"));
        assert_eq!(
            lines[2],
            "| 1 client, writes | 1,000 | 800 | 0.80 | 0.93 / 15.0 / 128 | 1.18 / 15.0 / 128 | 0.457 | 0.457 \
             | 45 / 46 / 44 | 45 / 46 / 44 |"
        );
        assert!(lines[3].starts_with("| 16 clients, writes | – | 2,610 | – | – | 3.00 / 15.0 / 128 |"), "{}", lines[3]);
        for l in &lines {
            assert_eq!(l.matches('|').count(), 11, "{l}");
        }
    }

    #[test]
    fn failed_operations_are_listed_under_the_table() {
        let mut k = figures(800, 1.0);
        k.errors = 7;
        let t = render(&[TableRow {
            label: "64 clients, writes".into(),
            etcd: Some(figures(1000, 1.0)),
            keyraft: Some(k),
        }]);
        assert!(t.ends_with("\nKeyraft, 64 clients, writes: 7 operations failed\n"), "{t}");
        assert!(!t.contains("etcd, 64"));
    }
}
