//! TLS of a cluster: in mode operator, issue and renew certificates into
//! the cluster's Secrets (crate::tls decides what); in every mode, give
//! the admin client the operator's admin certificate for this cluster.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Secret;
use keyraft_api::tls::{TlsConnector, TlsState};
use kube::api::PostParams;

use super::*;
use crate::tls::{self as certs, OperatorIdentity, SecretsData, TlsSecrets};

/// The DNS suffix the cluster's pods are reached under (see `Admin::set_tls`).
pub(super) fn pod_suffix(names: &Names) -> String {
    format!("{}.{}.svc", names.headless, names.namespace)
}

/// Issues what is missing or due (mode operator, while leading), then
/// registers the admin certificate with the admin client. Returns the
/// Secrets' data as written. Errors name the Secret and what is wrong with it.
pub(super) async fn ensure_tls(kr: &KeyraftCluster, ctx: &Context, names: &Names) -> Result<SecretsData> {
    let secrets = TlsSecrets::of(kr, names);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let mut current = SecretsData::new();
    for name in [secrets.ca.as_ref(), Some(&secrets.node), Some(&secrets.operator), secrets.client.as_ref()]
        .into_iter()
        .flatten()
    {
        if let Some(s) = api.get_opt(name).await? {
            // A Secret of an earlier cluster of the same name, waiting for
            // garbage collection, is not this cluster's: its CA is never
            // adopted (creating the new one waits until it is gone).
            let uid = kr.metadata.uid.as_deref();
            let stale = secrets.ca.is_some() && !s.owner_references().iter().any(|o| Some(o.uid.as_str()) == uid);
            if stale {
                continue;
            }
            let data = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
            current.insert(name.clone(), data);
        }
    }
    if secrets.ca.is_some() && ctx.leading() {
        // Pods of every ordinal the StatefulSet may run: during scale-in it
        // keeps members above spec.replicas until they are empty.
        let sts =
            Api::<StatefulSet>::namespaced(ctx.client.clone(), &names.namespace).get_opt(&names.statefulset).await?;
        let running = sts.and_then(|s| s.spec).and_then(|s| s.replicas).unwrap_or(0);
        let members = kr.spec.replicas.max(running).max(0) as u32;
        let plan = certs::plan(kr, names, members, &current, SystemTime::now())?;
        for (name, data) in plan.writes {
            let secret = certs::secret(kr, names, &name, data.clone())?;
            if plan.new_ca && Some(&name) == secrets.ca.as_ref() {
                // Created, never overwritten: if another replica made a CA
                // meanwhile, this pass's certificates are dropped and the
                // next pass issues from that CA.
                let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
                api.create(&pp, &secret).await?;
            } else {
                apply_object(&ctx.client, &names.namespace, &secret).await?;
            }
            current.insert(name, data);
        }
        if let Some(why) = &plan.rollover {
            let what = format!(
                "CA roll-over started ({why}): a next CA joins every trust bundle; it signs once every node trusts it"
            );
            tracing::info!(cluster = %key(kr), "{what}");
            publish(ctx, kr, EventType::Normal, "CARollOverStarted", "StartCARollOver", what).await;
        }
        if !plan.issued.is_empty() {
            let what = plan.issued.join(", ");
            tracing::info!(cluster = %key(kr), issued = %what, "certificates issued");
            publish(
                ctx,
                kr,
                EventType::Normal,
                "CertificatesIssued",
                "IssueCertificates",
                format!("issued {what}; nodes and clients reload them without a restart"),
            )
            .await;
        }
    }
    let empty = BTreeMap::new();
    let id = OperatorIdentity::from_secret(&secrets.operator, current.get(&secrets.operator).unwrap_or(&empty))?;
    let connector = connector(ctx, kr, &secrets.operator, &id)?;
    ctx.admin.set_tls(&pod_suffix(names), connector);
    Ok(current)
}

/// Mode operator, while leading: the next step of a CA roll-over under way,
/// once every pod's node reports it is ready for it (see crate::tls). The
/// certificates it calls for are issued by the next pass's [`ensure_tls`].
/// `Ok(true)` while a roll-over is under way (the next pass comes sooner).
pub(super) async fn advance_rotation(
    kr: &KeyraftCluster,
    ctx: &Context,
    names: &Names,
    current: &SecretsData,
    obs: &Observation,
) -> Result<bool> {
    let secrets = TlsSecrets::of(kr, names);
    let Some(ca_name) = secrets.ca.as_ref() else { return Ok(false) };
    let Some(ca) = current.get(ca_name) else { return Ok(false) };
    if !ctx.leading() {
        return Ok(false);
    }
    let pods: certs::NodeTls = obs.pods.iter().map(|p| (p.name.as_str(), p.report().map(|r| &r.tls))).collect();
    let rotating = ca.contains_key(certs::CA_NEXT_CRT) || ca.contains_key(certs::CA_PREVIOUS_CRT);
    let Some((data, step, what)) = certs::rotation_step(ca, current.get(&secrets.node), &pods) else {
        return Ok(rotating);
    };
    apply_object(&ctx.client, &names.namespace, &certs::secret(kr, names, ca_name, data)?).await?;
    tracing::info!(cluster = %key(kr), ?step, "CA roll-over: {what}");
    publish(ctx, kr, EventType::Normal, step.reason(), step.action(), what).await;
    Ok(true)
}

/// A connector presenting `id`, reused while the identity stays the same.
/// Built from the Secret's PEM in memory: the admin key never touches the
/// operator's disk (its root file system is read-only anyway).
fn connector(ctx: &Context, kr: &KeyraftCluster, secret: &str, id: &OperatorIdentity) -> Result<TlsConnector> {
    let mut cache = ctx.tls.lock().unwrap();
    if let Some((known, c)) = cache.get(&key(kr)) {
        if known == id {
            return Ok(c.clone());
        }
    }
    let label = format!("Secret {}/{secret}", names_ns(kr));
    let bad = |e: keyraft_api::tls::TlsError| Error::Invalid(format!("admin certificate: {e}"));
    let state = TlsState::from_pem(&label, id.ca.as_bytes(), id.cert.as_bytes(), id.key.as_bytes()).map_err(bad)?;
    let c = TlsConnector::new(&state).map_err(bad)?;
    cache.insert(key(kr), (id.clone(), c.clone()));
    Ok(c)
}

fn names_ns(kr: &KeyraftCluster) -> String {
    kr.namespace().unwrap_or_default()
}

/// Forgets a deleted cluster's admin identity.
pub(super) fn forget(ctx: &Context, kr: &KeyraftCluster, names: &Names) {
    ctx.tls.lock().unwrap().remove(&key(kr));
    ctx.admin.forget_tls(&pod_suffix(names));
}
