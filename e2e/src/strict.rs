//! How strict the simulator is where a real cluster refuses what a lax
//! simulator would let through. Every rule is on by default; a rule that
//! today's operator breaks can be switched off per simulator (and is named
//! in e2e/README.md) until the operator is fixed.

/// Switches for the rules a real cluster enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strictness {
    /// PodDisruptionBudgets gate the Eviction subresource (429 when no
    /// disruption is allowed).
    pub pdb_eviction: bool,
    /// Built-in kinds are validated as the API server does: names, label
    /// keys and values, annotation size, StatefulSet spec immutability.
    pub builtin_validation: bool,
    /// A re-created pod gets a new address (a real pod gets a new IP).
    pub new_pod_ip_per_incarnation: bool,
    /// A non-forced server-side apply that changes a field another manager
    /// owns fails with 409 Conflict.
    pub apply_conflicts: bool,
    /// The scheduler honours required node affinity, required pod
    /// anti-affinity and topology spread constraints (DoNotSchedule).
    pub scheduling_constraints: bool,
}

impl Default for Strictness {
    fn default() -> Self {
        Strictness {
            pdb_eviction: true,
            builtin_validation: true,
            new_pod_ip_per_incarnation: true,
            apply_conflicts: true,
            scheduling_constraints: true,
        }
    }
}

impl Strictness {
    /// Every rule off: the simulator as lax as it was before these rules.
    pub fn lax() -> Self {
        Strictness {
            pdb_eviction: false,
            builtin_validation: false,
            new_pod_ip_per_incarnation: false,
            apply_conflicts: false,
            scheduling_constraints: false,
        }
    }
}
