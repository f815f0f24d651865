//! The RBAC rules the operator needs, each with the code that needs it.
//! The Helm chart's ClusterRole and Role must grant exactly these
//! (operator/tests/chart.rs renders the chart and compares).

/// One RBAC rule.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub api_group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// The code that needs it.
    pub needed_by: &'static str,
}

/// Cluster-wide rules (KeyraftClusters live in any namespace).
pub const CLUSTER_RULES: &[Rule] = &[
    Rule {
        api_group: "keyraft.io",
        resources: &["keyraftclusters"],
        verbs: &["get", "list", "watch", "patch"],
        needed_by:
            "controller::run (Controller::new: list, watch); finalizer() adds/removes keyraft.io/cleanup (patch); \
             controller::backup reads the cluster a backup names (get)",
    },
    Rule {
        api_group: "keyraft.io",
        resources: &["keyraftbackups"],
        verbs: &["get", "list", "watch", "create", "delete"],
        needed_by: "controller::backup::run (list, watch); controller::cluster_backup creates scheduled backups \
             (create), lists them (list) and deletes expired ones (get, delete)",
    },
    Rule {
        api_group: "keyraft.io",
        resources: &["keyraftbackups/status"],
        verbs: &["patch"],
        needed_by: "controller::backup: server-side apply of a backup's status",
    },
    Rule {
        api_group: "keyraft.io",
        resources: &["keyraftclusters/status"],
        verbs: &["patch"],
        needed_by: "controller::status::write_status: server-side apply of the status subresource",
    },
    Rule {
        api_group: "apps",
        resources: &["statefulsets"],
        verbs: &["get", "list", "watch", "create", "patch"],
        needed_by:
            "controller::run owns() (list, watch); observe() get_opt (get); server-side apply (patch; create when new)",
    },
    Rule {
        api_group: "",
        resources: &["services", "configmaps"],
        verbs: &["list", "watch", "create", "patch"],
        needed_by: "controller::run owns() (list, watch); server-side apply of both Services and the ConfigMap",
    },
    Rule {
        api_group: "networking.k8s.io",
        resources: &["networkpolicies"],
        verbs: &["create", "patch", "delete"],
        needed_by: "controller::apply_all: server-side apply of the nodes' NetworkPolicy (patch; create when new); \
             deleted when spec.networkPolicy.enabled is false (delete)",
    },
    Rule {
        api_group: "",
        resources: &["secrets"],
        verbs: &["get", "create", "patch"],
        needed_by: "controller::certs::ensure_tls: reads the TLS Secrets (get), creates the CA Secret (create), \
                    server-side apply of issued certificates (patch)",
    },
    Rule {
        api_group: "cert-manager.io",
        resources: &["certificates"],
        verbs: &["list", "create", "patch", "delete"],
        needed_by: "controller::certs::gather_cert_manager, tls.mode certManager only: server-side apply of the \
                    cluster's Certificates (patch; create when new), lists them (list) and deletes those of removed \
                    members (delete)",
    },
    Rule {
        api_group: "policy",
        resources: &["poddisruptionbudgets"],
        verbs: &["list", "watch", "create", "patch"],
        needed_by: "controller::run owns() (list, watch); server-side apply of the PDB",
    },
    Rule {
        api_group: "",
        resources: &["pods"],
        verbs: &["list", "watch", "delete"],
        needed_by: "controller::run watches() and observe() (list, watch); Action::RestartPod (delete)",
    },
    Rule {
        api_group: "",
        resources: &["persistentvolumeclaims"],
        verbs: &["list", "delete"],
        needed_by: "controller::observe (list); Action::DeletePvc and cleanup() per reclaimPolicy Delete (delete)",
    },
    Rule {
        api_group: "",
        resources: &["nodes"],
        verbs: &["get"],
        needed_by: "controller::observe: zone label of each pod's Node",
    },
    Rule {
        api_group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        needed_by: "controller::publish: kube Recorder creates Events and patches repeated ones",
    },
];

/// What a namespace-scoped install grants in each watched namespace: every
/// cluster rule but the cluster-scoped Nodes.
pub fn namespaced_rules() -> Vec<Rule> {
    CLUSTER_RULES.iter().filter(|r| !r.resources.contains(&"nodes")).copied().collect()
}

/// What a namespace-scoped install still grants cluster-wide: reading Nodes.
pub fn node_rules() -> Vec<Rule> {
    CLUSTER_RULES.iter().filter(|r| r.resources.contains(&"nodes")).copied().collect()
}

/// Rules in the operator's own namespace, for leader election.
pub const LEADER_ELECTION_RULES: &[Rule] = &[Rule {
    api_group: "coordination.k8s.io",
    resources: &["leases"],
    verbs: &["get", "create", "update"],
    needed_by: "lease::try_acquire_or_renew: get_opt, create, replace",
}];

/// Flattens rules to sorted (group, resource, verb) triples.
pub fn triples(rules: &[Rule]) -> std::collections::BTreeSet<(String, String, String)> {
    rules
        .iter()
        .flat_map(|r| {
            r.resources.iter().flat_map(move |res| {
                r.verbs.iter().map(move |v| (r.api_group.to_string(), res.to_string(), v.to_string()))
            })
        })
        .collect()
}
