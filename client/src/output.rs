//! How the CLI prints data: `-o table` (default), `-o json` or `-o yaml`,
//! tables with columns sized to their content, and binary-safe encodings
//! of keys and values.

use std::fmt::Write;
use std::str::FromStr;

use base64::Engine as _;
use serde::Serialize;

/// The `-o` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Self::Table),
            "json" => Ok(Self::Json),
            "yaml" => Ok(Self::Yaml),
            other => Err(format!("output format {other:?} is not one of: table, json, yaml")),
        }
    }
}

/// Serializes `v` as JSON (pretty, one trailing newline) or YAML.
pub fn structured<T: Serialize>(v: &T, format: Format) -> Result<String, String> {
    match format {
        Format::Json => serde_json::to_string_pretty(v).map(|s| s + "\n").map_err(|e| e.to_string()),
        Format::Yaml => serde_yaml::to_string(v).map_err(|e| e.to_string()),
        Format::Table => Err("a table is rendered by the command itself".into()),
    }
}

/// How bytes are shown: as text (invalid UTF-8 replaced), hex or base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Text,
    Hex,
    Base64,
}

impl Encoding {
    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Self::Text => String::from_utf8_lossy(bytes).into_owned(),
            Self::Hex => bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            }),
            Self::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }
}

/// Columns of a table. A column whose name starts with `>` is right-aligned.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// The table, each column as wide as its widest cell, two spaces apart.
    pub fn render(&self) -> String {
        let right: Vec<bool> = self.headers.iter().map(|h| h.starts_with('>')).collect();
        let headers: Vec<String> = self.headers.iter().map(|h| h.trim_start_matches('>').to_string()).collect();
        let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                let pad = widths[i] - c.chars().count();
                let last = i + 1 == r.len();
                if i > 0 {
                    line.push_str("  ");
                }
                if right[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    if !last {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell() {
        let mut t = Table::new(&["NAME", ">KEYS"]);
        t.row(vec!["kv-0.kv-headless.keyraft-system.svc.cluster.local:7000".into(), "7".into()]);
        t.row(vec!["a".into(), "12345".into()]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], format!("NAME{}   KEYS", " ".repeat(50)));
        assert_eq!(lines[1], "kv-0.kv-headless.keyraft-system.svc.cluster.local:7000      7");
        assert_eq!(lines[2], format!("a{}  12345", " ".repeat(53)));
    }

    #[test]
    fn encodings_are_binary_safe() {
        let b = [0u8, 0xff, b'a'];
        assert_eq!(Encoding::Hex.encode(&b), "00ff61");
        assert_eq!(Encoding::Base64.encode(&b), "AP9h");
        assert_eq!(Encoding::Text.encode(b"plain"), "plain");
    }

    #[test]
    fn formats_parse_and_name_the_choices() {
        assert_eq!("yaml".parse::<Format>(), Ok(Format::Yaml));
        assert!("xml".parse::<Format>().unwrap_err().contains("table, json, yaml"));
        #[derive(Serialize)]
        struct V {
            a: u32,
        }
        assert_eq!(structured(&V { a: 1 }, Format::Json).unwrap(), "{\n  \"a\": 1\n}\n");
        assert_eq!(structured(&V { a: 1 }, Format::Yaml).unwrap(), "a: 1\n");
    }
}
