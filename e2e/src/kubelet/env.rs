//! A container's command line and environment from the pod spec:
//! image -> binary, `env`/`envFrom` (values, downward-API fieldRefs,
//! ConfigMap and Secret keys), `$(VAR)` expansion, and the two rewrites
//! that let a pod run as a local process:
//!
//! - `0.0.0.0` in an env value or argument becomes the pod's own loopback
//!   address, so every pod binds its ports on its own 127.N.x.y;
//! - a path at or under a volume's `mountPath` becomes the same path
//!   under the volume's host directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use crate::objects::Objects;
use crate::registry::GroupResource;

/// What a container runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// Executable (resolved against the image's bin dir when bare).
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Environment in definition order (later entries win).
    pub env: Vec<(String, String)>,
}

/// `keyraft/keyraft-node:v1` -> (`keyraft-node`, `v1`); no tag -> `latest`.
pub fn image_parts(image: &str) -> (String, String) {
    let last = image.rsplit('/').next().unwrap_or(image);
    let last = last.split('@').next().unwrap_or(last);
    match last.split_once(':') {
        Some((name, tag)) => (name.to_string(), tag.to_string()),
        None => (last.to_string(), "latest".to_string()),
    }
}

/// Expands `$(VAR)` from `vars`; `$$(VAR)` is a literal `$(VAR)`;
/// unknown references stay as written (as in Kubernetes).
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("$(") {
            match t.find(')') {
                Some(end) => {
                    let name = &t[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &t[end + 1..];
                }
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Downward-API value of a `fieldRef.fieldPath`.
pub fn field_ref(pod: &Value, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let s = |v: &Value| v.as_str().map(String::from);
    match path {
        "metadata.name" => s(&pod["metadata"]["name"]),
        "metadata.namespace" => s(&pod["metadata"]["namespace"]),
        "metadata.uid" => s(&pod["metadata"]["uid"]),
        "spec.nodeName" => s(&pod["spec"]["nodeName"]),
        "spec.serviceAccountName" => s(&pod["spec"]["serviceAccountName"]),
        "status.podIP" => Some(pod_ip.to_string()),
        "status.hostIP" => Some(host_ip.to_string()),
        p => {
            let (field, key) = p.split_once("['")?;
            let key = key.strip_suffix("']")?;
            match field {
                "metadata.labels" => s(&pod["metadata"]["labels"][key]),
                "metadata.annotations" => s(&pod["metadata"]["annotations"][key]),
                _ => None,
            }
        }
    }
}

fn config_data(objects: &Objects, ns: &str, kind: &str, name: &str) -> Option<BTreeMap<String, String>> {
    let (resource, field) = if kind == "secret" { ("secrets", "data") } else { ("configmaps", "data") };
    let obj = objects.store.get(&GroupResource::new("", resource), ns, name)?;
    let mut out = BTreeMap::new();
    if let Some(m) = obj[field].as_object() {
        for (k, v) in m {
            let raw = v.as_str().unwrap_or_default();
            let value = if kind == "secret" {
                base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .map(|b| String::from_utf8_lossy(&b).to_string())
                    .unwrap_or_default()
            } else {
                raw.to_string()
            };
            out.insert(k.clone(), value);
        }
    }
    if kind == "secret" {
        if let Some(m) = obj["stringData"].as_object() {
            for (k, v) in m {
                out.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
    }
    Some(out)
}

/// Where a pod runs, for building its containers' launches.
pub struct PodContext<'a> {
    pub objects: &'a Objects,
    pub pod: &'a Value,
    pub pod_ip: String,
    pub host_ip: String,
    /// Volume name -> host directory.
    pub volumes: &'a BTreeMap<String, PathBuf>,
    /// Directory of the image tag's binaries.
    pub bin_dir: &'a Path,
}

impl PodContext<'_> {
    /// Replaces a mount path by its host directory (the longest matching
    /// mount, once: a host directory that happens to lie under another
    /// mount path, e.g. a state dir under /tmp with a /tmp emptyDir, stays
    /// as it is) and 0.0.0.0 by the pod IP.
    fn rewrite(&self, s: &str, mounts: &[(String, PathBuf)]) -> String {
        let s = s.replace("0.0.0.0", &self.pod_ip);
        for (mount, host) in mounts {
            if s == *mount {
                return host.display().to_string();
            } else if let Some(rest) = s.strip_prefix(&format!("{mount}/")) {
                return host.join(rest).display().to_string();
            }
        }
        s
    }

    /// The launch of one container, or why it cannot start (a missing
    /// ConfigMap or Secret, as `CreateContainerConfigError`).
    pub fn launch(&self, container: &Value) -> Result<Launch, String> {
        let ns = self.pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let mut mounts: Vec<(String, PathBuf)> = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let host = self.volumes.get(m["name"].as_str()?)?;
                let host = match m["subPath"].as_str() {
                    Some(sub) if !sub.is_empty() => host.join(sub),
                    _ => host.clone(),
                };
                Some((m["mountPath"].as_str()?.trim_end_matches('/').to_string(), host))
            })
            .collect();
        mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));

        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        let mut env: Vec<(String, String)> = Vec::new();
        let mut set = |k: String, v: String, vars: &mut BTreeMap<String, String>| {
            vars.insert(k.clone(), v.clone());
            env.push((k, v));
        };
        for from in container["envFrom"].as_array().into_iter().flatten() {
            let prefix = from["prefix"].as_str().unwrap_or_default();
            for (kind, src) in [("configmap", &from["configMapRef"]), ("secret", &from["secretRef"])] {
                let Some(name) = src["name"].as_str() else { continue };
                match config_data(self.objects, ns, kind, name) {
                    Some(data) => {
                        for (k, v) in data {
                            set(format!("{prefix}{k}"), v, &mut vars);
                        }
                    }
                    None if src["optional"] == true => {}
                    None => return Err(format!("{kind} \"{name}\" not found")),
                }
            }
        }
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or_default().to_string();
            let value = if let Some(v) = e["value"].as_str() {
                expand(v, &vars)
            } else if let Some(f) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                field_ref(self.pod, f, &self.pod_ip, &self.host_ip).unwrap_or_default()
            } else if let Some(r) = e["valueFrom"].get("configMapKeyRef").or(e["valueFrom"].get("secretKeyRef")) {
                let kind = if e["valueFrom"].get("secretKeyRef").is_some() { "secret" } else { "configmap" };
                let src = r["name"].as_str().unwrap_or_default();
                let key = r["key"].as_str().unwrap_or_default();
                match config_data(self.objects, ns, kind, src).and_then(|d| d.get(key).cloned()) {
                    Some(v) => v,
                    None if r["optional"] == true => continue,
                    None => return Err(format!("{kind} \"{src}\" has no key \"{key}\"")),
                }
            } else {
                String::new()
            };
            set(name, value, &mut vars);
        }
        // Arguments expand the values as written and are rewritten once, after expansion.
        let vars: BTreeMap<String, String> = env.iter().cloned().collect();
        let env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k, self.rewrite(&v, &mounts))).collect();

        let (image_bin, _) = image_parts(container["image"].as_str().unwrap_or_default());
        let strs = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str().map(|s| expand(s, &vars))).collect())
                .unwrap_or_default()
        };
        let mut argv = strs(&container["command"]);
        if argv.is_empty() {
            argv.push(image_bin);
        }
        argv.extend(strs(&container["args"]));
        let argv: Vec<String> = argv.iter().map(|a| self.rewrite(a, &mounts)).collect();
        let program = if argv[0].contains('/') {
            PathBuf::from(&argv[0])
        } else if self.bin_dir.join(&argv[0]).is_file() {
            self.bin_dir.join(&argv[0])
        } else {
            PathBuf::from(&argv[0])
        };
        Ok(Launch { program, args: argv[1..].to_vec(), env })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let vars: BTreeMap<String, String> = [("A".to_string(), "x".to_string())].into();
        assert_eq!(expand("$(A).svc", &vars), "x.svc");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$(B)-$", &vars), "$(B)-$");
    }

    #[test]
    fn image_parts_split_repo_and_tag() {
        assert_eq!(image_parts("keyraft/keyraft-node:v1"), ("keyraft-node".into(), "v1".into()));
        assert_eq!(image_parts("reg:5000/a/b"), ("b".into(), "latest".into()));
    }

    #[test]
    fn launch_resolves_env_and_rewrites_addresses_and_mounts() {
        let objects = Objects::new(crate::registry::Registry::new(), crate::store::Store::new(), "127.1.255.");
        let pod = json!({"metadata": {"name": "web-0", "namespace": "ns"}, "spec": {}});
        let volumes: BTreeMap<String, PathBuf> = [("data".to_string(), PathBuf::from("/state/v1"))].into();
        let ctx = PodContext {
            objects: &objects,
            pod: &pod,
            pod_ip: "127.1.0.5".into(),
            host_ip: "127.1.254.1".into(),
            volumes: &volumes,
            bin_dir: Path::new("/nonexistent"),
        };
        let container = json!({
            "image": "keyraft/keyraft-node:v2",
            "env": [
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "ADV", "value": "$(NAME).svc:7000"},
                {"name": "LISTEN", "value": "0.0.0.0:7000"},
                {"name": "DIR", "value": "/var/lib/x/sub"},
            ],
            "args": ["--dir", "/var/lib/x"],
            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/x"}],
        });
        let l = ctx.launch(&container).unwrap();
        assert_eq!(l.program, PathBuf::from("keyraft-node"));
        assert_eq!(l.args, vec!["--dir".to_string(), "/state/v1".into()]);
        let env: BTreeMap<_, _> = l.env.into_iter().collect();
        assert_eq!(env["ADV"], "web-0.svc:7000");
        assert_eq!(env["LISTEN"], "127.1.0.5:7000");
        assert_eq!(env["DIR"], "/state/v1/sub");
        let missing = json!({"envFrom": [{"configMapRef": {"name": "nope"}}]});
        assert!(ctx.launch(&missing).unwrap_err().contains("not found"));
        // A host directory under another mount path is not rewritten again.
        let volumes: BTreeMap<String, PathBuf> = [
            ("data".to_string(), PathBuf::from("/tmp/state/volumes/v1")),
            ("tmp".to_string(), PathBuf::from("/tmp/state/pods/p/tmp")),
        ]
        .into();
        let under_tmp = PodContext { volumes: &volumes, ..ctx };
        let c = json!({
            "image": "keyraft/keyraft-node:v2",
            "env": [{"name": "DIR", "value": "/var/lib/x"}, {"name": "T", "value": "/tmp/a"}],
            "args": ["--dir", "$(DIR)/sub"],
            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/x"}, {"name": "tmp", "mountPath": "/tmp"}],
        });
        let l = under_tmp.launch(&c).unwrap();
        let env: BTreeMap<_, _> = l.env.into_iter().collect();
        assert_eq!(env["DIR"], "/tmp/state/volumes/v1");
        assert_eq!(env["T"], "/tmp/state/pods/p/tmp/a");
        assert_eq!(l.args, vec!["--dir".to_string(), "/tmp/state/volumes/v1/sub".into()]);
    }
}
