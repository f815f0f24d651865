//! Simulated Nodes: their Ready condition (a fault hook flips it).

use serde_json::json;

use super::{patch_status, rt};
use crate::error::ApiResult;
use crate::objects::Objects;
use crate::time;

/// Sets a Node's Ready condition (and the matching unreachable taint).
pub fn set_ready(objects: &Objects, name: &str, ready: bool) -> ApiResult<()> {
    let nodes = rt(objects, "", "nodes");
    let status = if ready { "True" } else { "Unknown" };
    patch_status(
        objects,
        &nodes,
        "",
        name,
        json!({
            "conditions": [{
                "type": "Ready",
                "status": status,
                "reason": if ready { "KubeletReady" } else { "NodeStatusUnknown" },
                "message": if ready { "kubelet is posting ready status" } else { "simulated: node marked NotReady" },
                "lastHeartbeatTime": time::now(),
                "lastTransitionTime": time::now(),
            }],
            "nodeInfo": {"kubeletVersion": "v1.35.0-keyraft-sim", "operatingSystem": "linux", "architecture": "amd64"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
        }),
    )?;
    let taints =
        if ready { json!(null) } else { json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}]) };
    objects.patch(
        &nodes,
        "",
        name,
        crate::objects::PatchType::Merge,
        &json!({"spec": {"taints": taints}}),
        crate::objects::Part::Main,
        &Default::default(),
    )?;
    Ok(())
}

/// Is a Node object Ready?
pub fn is_ready(node: &serde_json::Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}
