//! Connecting to etcd, in plain text or over TLS (etcd-client's `tls`
//! feature: tonic with rustls and ring).

use std::path::Path;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// TLS to etcd: the PEM files' bytes, read when the config is made (a
/// missing file fails then, not at the first connect).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed etcd's certificate (`None`: tonic's default,
    /// which trusts no root: give one).
    pub ca: Option<Vec<u8>>,
    /// A client certificate and its key, for etcd's `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key
        f.debug_struct("EtcdTls")
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// A TLS file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {what} {path}: {source}")]
pub struct TlsFileError {
    what: &'static str,
    path: String,
    #[source]
    source: std::io::Error,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError {
        what,
        path: path.display().to_string(),
        source,
    })
}

impl EtcdTls {
    /// Reads the CA and, if given, the client certificate and key.
    pub fn from_files(
        ca: Option<&Path>,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Self, TlsFileError> {
        Ok(Self {
            ca: ca.map(|p| read("the etcd CA", p)).transpose()?,
            identity: identity
                .map(|(cert, key)| {
                    Ok::<_, TlsFileError>((
                        read("the etcd client certificate", cert)?,
                        read("the etcd client key", key)?,
                    ))
                })
                .transpose()?,
        })
    }

    fn options(&self) -> TlsOptions {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        tls
    }
}

/// Connects to `endpoints` (`HOST:PORT`): over TLS (`https://`) when `tls`
/// is given, else in plain text.
pub async fn connect(
    endpoints: &[String],
    tls: Option<&EtcdTls>,
) -> Result<Client, etcd_client::Error> {
    match tls {
        None => Client::connect(endpoints, None).await,
        Some(tls) => {
            let urls: Vec<String> = endpoints.iter().map(|e| format!("https://{e}")).collect();
            let options = ConnectOptions::new().with_tls(tls.options());
            Client::connect(urls, Some(options)).await
        }
    }
}
