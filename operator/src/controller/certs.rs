//! TLS of a cluster: in mode operator, issue and renew certificates into
//! the cluster's Secrets (crate::tls decides what); in mode certManager,
//! ask cert-manager for them and gather the pods' certificates into the
//! node Secret (crate::cert_manager decides what); in every mode, give
//! the admin client the operator's admin certificate for this cluster.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Secret;
use keyraft_api::tls::{TlsConnector, TlsState};
use kube::api::{DynamicObject, PostParams};

use super::*;
use crate::cert_manager;
use crate::crd::TlsMode;
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
    if ctx.leading() {
        // Pods of every ordinal the StatefulSet may run: during scale-in it
        // keeps members above spec.replicas until they are empty.
        let sts =
            Api::<StatefulSet>::namespaced(ctx.client.clone(), &names.namespace).get_opt(&names.statefulset).await?;
        let running = sts.and_then(|s| s.spec).and_then(|s| s.replicas).unwrap_or(0);
        let members = kr.spec.replicas.max(running).max(0) as u32;
        if secrets.ca.is_some() {
            issue(kr, ctx, names, &secrets, members, &mut current).await?;
        }
        if let Some(certificates) = cert_manager::certificates(kr, names, members)? {
            gather_cert_manager(kr, ctx, names, &secrets, members, certificates, &mut current).await?;
        }
    }
    let empty = BTreeMap::new();
    let mut id = OperatorIdentity::from_secret(&secrets.operator, current.get(&secrets.operator).unwrap_or(&empty))?;
    if kr.spec.tls.mode == TlsMode::CertManager {
        // Trust every CA the nodes may serve from while the issuer's CA
        // changes, not only the one in the admin Secret.
        if let Some(bundle) = current.get(&secrets.node).and_then(|d| d.get(certs::CA_CRT)) {
            id.ca = String::from_utf8_lossy(bundle).into_owned();
        }
    }
    let connector = connector(ctx, kr, &secrets.operator, &id)?;
    ctx.admin.set_tls(&pod_suffix(names), connector);
    Ok(current)
}

/// Mode operator: issues what is missing or due into the Secrets.
async fn issue(
    kr: &KeyraftCluster,
    ctx: &Context,
    names: &Names,
    secrets: &TlsSecrets,
    members: u32,
    current: &mut SecretsData,
) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let plan = certs::plan(kr, names, members, current, SystemTime::now())?;
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
    Ok(())
}

/// Mode certManager: applies the cluster's Certificates, deletes those of
/// ordinals past `members`, and gathers the pods' Secrets cert-manager
/// wrote into the node Secret.
async fn gather_cert_manager(
    kr: &KeyraftCluster,
    ctx: &Context,
    names: &Names,
    secrets: &TlsSecrets,
    members: u32,
    certificates: Vec<DynamicObject>,
    current: &mut SecretsData,
) -> Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &names.namespace, &cert_manager::certificate_resource());
    let not_installed = |e: kube::Error| match e {
        kube::Error::Api(e) if e.code == 404 => Error::Invalid(
            "spec.tls.mode is certManager, but the API server does not serve cert-manager.io/v1 Certificate: \
             install cert-manager, or create the cluster with another tls.mode"
                .into(),
        ),
        e => e.into(),
    };
    for cert in &certificates {
        api.patch(&cert.name_any(), &ssa(), &Patch::Apply(cert)).await.map_err(not_installed)?;
    }
    let lp = ListParams::default().labels(&format!(
        "app.kubernetes.io/instance={},{}",
        names.cluster,
        cert_manager::HOLDER_LABEL
    ));
    for c in api.list(&lp).await.map_err(not_installed)? {
        let holder = c.labels().get(cert_manager::HOLDER_LABEL).cloned().unwrap_or_default();
        if cert_manager::is_past(names, &holder, members) {
            // Its Secret stays until cert-manager or a person removes it;
            // the node Secret drops the pod's key below.
            api.delete(&c.name_any(), &DeleteParams::default()).await?;
            tracing::info!(cluster = %key(kr), certificate = %c.name_any(), "certificate of a removed member deleted");
        }
    }
    let secret_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    for ordinal in 0..members {
        let name = cert_manager::pod_secret(&names.pod(ordinal));
        if let Some(s) = secret_api.get_opt(&name).await? {
            current.insert(name, s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect());
        }
    }
    let gathered = cert_manager::node_secret(names, members, current)?;
    if !gathered.waiting.is_empty() {
        tracing::info!(cluster = %key(kr), waiting = ?gathered.waiting, "waiting for cert-manager to issue certificates");
    }
    if !gathered.data.is_empty() && current.get(&secrets.node) != Some(&gathered.data) {
        apply_object(&ctx.client, &names.namespace, &certs::secret(kr, names, &secrets.node, gathered.data.clone())?)
            .await?;
        current.insert(secrets.node.clone(), gathered.data);
    }
    Ok(())
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
