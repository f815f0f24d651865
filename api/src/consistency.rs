//! Consistency levels and session tokens.

use std::fmt;
use std::str::FromStr;

use crate::pb;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsistencyLevel {
    /// Served by the leader after confirming leadership (ReadIndex).
    Linearizable,
    /// Any replica that has applied at least the client's session token.
    Session,
    /// The local replica, immediately; may be stale.
    Eventual,
}

impl ConsistencyLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linearizable => "linearizable",
            Self::Session => "session",
            Self::Eventual => "eventual",
        }
    }

    /// The level a request asked for; `None` means "the cluster default".
    pub fn from_wire(v: i32) -> Result<Option<Self>, String> {
        match pb::Consistency::try_from(v) {
            Ok(pb::Consistency::Unspecified) => Ok(None),
            Ok(pb::Consistency::Linearizable) => Ok(Some(Self::Linearizable)),
            Ok(pb::Consistency::Session) => Ok(Some(Self::Session)),
            Ok(pb::Consistency::Eventual) => Ok(Some(Self::Eventual)),
            Err(_) => {
                Err(format!("consistency: unknown level {v}; expected 1 (linearizable), 2 (session) or 3 (eventual)"))
            }
        }
    }

    pub fn to_wire(self) -> pb::Consistency {
        match self {
            Self::Linearizable => pb::Consistency::Linearizable,
            Self::Session => pb::Consistency::Session,
            Self::Eventual => pb::Consistency::Eventual,
        }
    }
}

impl fmt::Display for ConsistencyLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConsistencyLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "linearizable" => Ok(Self::Linearizable),
            "session" => Ok(Self::Session),
            "eventual" => Ok(Self::Eventual),
            other => Err(format!("unknown consistency level {other:?}; expected linearizable, session or eventual")),
        }
    }
}

/// A session token: the applied index a client has seen on one partition.
/// Written as `PARTITION:INDEX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionToken {
    pub partition: u32,
    pub index: u64,
}

impl fmt::Display for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.partition, self.index)
    }
}

impl FromStr for SessionToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("session_token: {s:?} is not a token; expected PARTITION:INDEX as returned by an earlier response")
        };
        let (p, i) = s.split_once(':').ok_or_else(bad)?;
        Ok(Self { partition: p.parse().map_err(|_| bad())?, index: i.parse().map_err(|_| bad())? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_rejects_garbage() {
        let t = SessionToken { partition: 3, index: 1042 };
        assert_eq!(t.to_string().parse::<SessionToken>().unwrap(), t);
        for bad in ["", "3", "x:1", "3:y", "3:1:2", "-1:4"] {
            let err = bad.parse::<SessionToken>().unwrap_err();
            assert!(err.contains("session_token"), "{bad}: {err}");
        }
    }

    #[test]
    fn levels_parse_from_text_and_wire() {
        for l in [ConsistencyLevel::Linearizable, ConsistencyLevel::Session, ConsistencyLevel::Eventual] {
            assert_eq!(l.as_str().parse::<ConsistencyLevel>().unwrap(), l);
            assert_eq!(ConsistencyLevel::from_wire(l.to_wire() as i32).unwrap(), Some(l));
        }
        assert_eq!(ConsistencyLevel::from_wire(0).unwrap(), None);
        assert!(ConsistencyLevel::from_wire(9).unwrap_err().contains("consistency"));
        assert!("strong".parse::<ConsistencyLevel>().is_err());
    }
}
