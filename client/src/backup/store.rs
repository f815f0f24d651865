//! Where backups live: an object store and a prefix, from a URL.
//!
//! `file:///dir`, `s3://bucket/prefix`, `gs://bucket/prefix`,
//! `az://container/prefix` (and the other Azure URL forms object_store
//! knows). Credentials and endpoints come from the usual environment:
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_REGION`/`AWS_ENDPOINT_URL`
//! (`AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint), `GOOGLE_SERVICE_ACCOUNT`
//! or `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_STORAGE_ACCOUNT_NAME` and
//! `AZURE_STORAGE_ACCOUNT_KEY`, and the other variables each builder reads.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreScheme, RetryConfig};
use url::Url;

/// An object store and the prefix under which backups are kept.
#[derive(Clone)]
pub struct Destination {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// The URL as given, for messages.
    pub url: String,
}

impl Destination {
    /// `<prefix>/<name>/<object>`.
    pub fn path(&self, name: &str, object: &str) -> Path {
        self.dir(name).join(object)
    }

    pub fn dir(&self, name: &str) -> Path {
        self.prefix.clone().join(name)
    }

    /// `URL/name/object`, for messages.
    pub fn show(&self, name: &str, object: &str) -> String {
        format!("{}/{name}/{object}", self.url.trim_end_matches('/'))
    }
}

/// How object requests are retried: exponential backoff on connection
/// errors, 5xx answers and throttling, for at most `timeout`.
pub fn retry_config(timeout: Duration) -> RetryConfig {
    RetryConfig { retry_timeout: timeout, ..RetryConfig::default() }
}

/// Opens the destination at `url`. `create`: a `file://` directory is made
/// when missing (a backup writes there); otherwise it must exist.
pub fn open(url: &str, retry_timeout: Duration, create: bool) -> anyhow::Result<Destination> {
    open_with(url, retry_timeout, create, &Credentials::Environment)
}

/// Where a destination's credentials and settings come from.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// This process's environment (the CLI).
    Environment,
    /// Only these settings, named as the environment variables would be
    /// (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, `GOOGLE_SERVICE_ACCOUNT_KEY`,
    /// `AZURE_STORAGE_ACCOUNT_KEY`, ...): a Kubernetes Secret's keys. The
    /// environment is not read, so one cluster's backups never use another's.
    Settings(std::collections::BTreeMap<String, String>),
}

impl Credentials {
    fn get(&self, key: &str) -> Option<String> {
        match self {
            Credentials::Environment => std::env::var(key).ok(),
            Credentials::Settings(m) => m.get(key).cloned(),
        }
        .filter(|v| !v.is_empty())
    }

    /// The settings whose names start with `prefix` (`AWS_`), lower-cased
    /// as object_store's config keys are.
    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        match self {
            Credentials::Environment => Vec::new(),
            Credentials::Settings(m) => m
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        }
    }
}

/// [`open`] with the credentials from `creds`.
pub fn open_with(url: &str, retry_timeout: Duration, create: bool, creds: &Credentials) -> anyhow::Result<Destination> {
    // TLS for the cloud stores: rustls with ring. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let parsed = Url::parse(url).map_err(|e| {
        anyhow::anyhow!(
            "{url:?} is not a URL ({e}); give file:///DIR, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or az://CONTAINER/PREFIX"
        )
    })?;
    let (scheme, prefix) = ObjectStoreScheme::parse(&parsed)
        .map_err(|e| anyhow::anyhow!("{url}: not an object store URL this build knows ({e})"))?;
    let retry = retry_config(retry_timeout);
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::Local => {
            let dir = parsed.to_file_path().map_err(|_| anyhow::anyhow!("{url}: not a local path"))?;
            if create {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create the backup directory of {url}"))?;
            } else if !dir.is_dir() {
                bail!("{url}: no such directory");
            }
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .with_context(|| format!("cannot open {url}"))?;
            return Ok(Destination { store: Arc::new(fs), prefix: Path::default(), url: url.to_string() });
        }
        ObjectStoreScheme::AmazonS3 => {
            check_aws_credentials(url, creds)?;
            let mut b = match creds {
                Credentials::Environment => object_store::aws::AmazonS3Builder::from_env(),
                Credentials::Settings(_) => object_store::aws::AmazonS3Builder::new(),
            };
            for (k, v) in creds.with_prefix("AWS_") {
                if let Ok(key) = k.parse::<object_store::aws::AmazonS3ConfigKey>() {
                    b = b.with_config(key, v);
                }
            }
            Arc::new(b.with_url(url).with_retry(retry).build().with_context(|| format!("cannot open {url}"))?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut b = match creds {
                Credentials::Environment => object_store::gcp::GoogleCloudStorageBuilder::from_env(),
                Credentials::Settings(_) => object_store::gcp::GoogleCloudStorageBuilder::new(),
            };
            for (k, v) in creds.with_prefix("GOOGLE_") {
                if let Ok(key) = k.parse::<object_store::gcp::GoogleConfigKey>() {
                    b = b.with_config(key, v);
                }
            }
            Arc::new(b.with_url(url).with_retry(retry).build().with_context(|| format!("cannot open {url}"))?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut b = match creds {
                Credentials::Environment => object_store::azure::MicrosoftAzureBuilder::from_env(),
                Credentials::Settings(_) => object_store::azure::MicrosoftAzureBuilder::new(),
            };
            for (k, v) in creds.with_prefix("AZURE_") {
                if let Ok(key) = k.parse::<object_store::azure::AzureConfigKey>() {
                    b = b.with_config(key, v);
                }
            }
            Arc::new(b.with_url(url).with_retry(retry).build().with_context(|| format!("cannot open {url}"))?)
        }
        other => bail!("{url}: {other:?} URLs cannot hold backups; use file://, s3://, gs:// or az://"),
    };
    Ok(Destination { store, prefix, url: url.to_string() })
}

/// Refuses an S3 destination with no credentials in the environment, rather
/// than waiting on an instance-metadata endpoint that is not there.
/// `KEYRAFT_BACKUP_INSTANCE_CREDENTIALS=1` lets the instance metadata (an
/// EC2 instance role) provide them.
fn check_aws_credentials(url: &str, creds: &Credentials) -> anyhow::Result<()> {
    let set = |k: &str| creds.get(k).is_some();
    if set("AWS_ACCESS_KEY_ID") != set("AWS_SECRET_ACCESS_KEY") {
        bail!("{url}: credentials incomplete: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
    }
    let any = [
        "AWS_ACCESS_KEY_ID",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "KEYRAFT_BACKUP_INSTANCE_CREDENTIALS",
    ]
    .iter()
    .any(|k| set(k))
        || creds.get("AWS_SKIP_SIGNATURE").is_some_and(|v| v == "true");
    if !any {
        bail!(
            "{url}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_WEB_IDENTITY_TOKEN_FILE; \
             KEYRAFT_BACKUP_INSTANCE_CREDENTIALS=1 to use an instance role)"
        );
    }
    Ok(())
}

/// Says what went wrong with an object request, naming the object.
pub fn explain(e: object_store::Error, what: &str) -> anyhow::Error {
    use object_store::Error as E;
    match &e {
        E::NotFound { .. } => anyhow::anyhow!("{what}: not found"),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            anyhow::anyhow!("{what}: the store refused the credentials: {e}")
        }
        _ => anyhow::anyhow!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_is_not_a_url_is_refused_with_the_forms_that_work() {
        let e = open("/var/backups", Duration::from_secs(1), false).err().unwrap().to_string();
        assert!(e.contains("is not a URL") && e.contains("s3://BUCKET/PREFIX"), "{e}");
        let e = open("http://example.com/x", Duration::from_secs(1), false).err().unwrap().to_string();
        assert!(e.contains("cannot hold backups"), "{e}");
    }

    #[test]
    fn a_missing_local_directory_is_named() {
        let e = open("file:///nonexistent/keyraft-backups", Duration::from_secs(1), false).err().unwrap().to_string();
        assert_eq!(e, "file:///nonexistent/keyraft-backups: no such directory");
    }
}
