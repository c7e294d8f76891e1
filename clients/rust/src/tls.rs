//! TLS for TCP endpoints: the CA that the server's certificate must chain
//! to and, for mTLS, the client's own certificate and key (PEM files).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ClientError;

/// How a client speaks TLS to a TCP endpoint. Cheap to clone.
#[derive(Clone)]
pub struct TlsOptions {
    pub(crate) config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field(
                "client_certificate",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .finish()
    }
}

fn tls_error(path: &Path, what: impl std::fmt::Display) -> ClientError {
    ClientError::Tls {
        reason: format!("{}: {what}", path.display()),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|error| tls_error(path, error))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| tls_error(path, error))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no CERTIFICATE in it"));
    }
    Ok(certs)
}

impl TlsOptions {
    /// Trusts the CA certificates in the PEM file `ca`; presents the client
    /// certificate `cert` with its key `key` (PEM) when both are given.
    pub fn from_files(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(ca)? {
            roots.add(cert).map_err(|error| tls_error(ca, error))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Tls {
            reason: error.to_string(),
        })?
        .with_root_certificates(roots);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates(cert)?;
                let key = PrivateKeyDer::from_pem_slice(&read(key)?)
                    .map_err(|error| tls_error(key, format!("no private key: {error}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| tls_error(cert, error))?
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsOptions {
            config: Arc::new(config),
        })
    }

    /// A TLS connection to `host:port`, the server's certificate checked
    /// for the name `host`.
    pub(crate) async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let name = rustls_pki_types::ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
        let tcp = tokio::net::TcpStream::connect((
            host.trim_start_matches('[').trim_end_matches(']'),
            port,
        ))
        .await?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
    }
}
