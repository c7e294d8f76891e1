//! TLS on TCP: the server's certificate and key (and, for mTLS, the CA that
//! client certificates must chain to), read from PEM files, swapped in
//! whole on [`ServerTls::reload`] (new handshakes use the new certificate;
//! open connections keep theirs), and the subject of a client certificate
//! (parsed with `x509-parser`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where the server's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to; `Some`
    /// turns on mTLS (a client without a valid certificate is refused).
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind expected.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        what: String,
    },
    /// rustls refused the material (a key that does not match, a bad CA).
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// The server's TLS configuration, replaceable while serving.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    current: ArcSwap<ServerConfig>,
}

impl ServerTls {
    /// Loads `files` for the gRPC server (ALPN `h2`).
    pub fn load(files: TlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        Self::load_for(files, vec![b"h2".to_vec()])
    }

    /// Loads `files` for a server speaking the ALPN protocols `alpn` (the
    /// metrics endpoint: `http/1.1`).
    pub fn load_for(files: TlsFiles, alpn: Vec<Vec<u8>>) -> Result<Arc<ServerTls>, TlsError> {
        let config = build(&files, &alpn)?;
        Ok(Arc::new(ServerTls {
            files,
            alpn,
            current: ArcSwap::from_pointee(config),
        }))
    }

    /// Reads the files again and, if they are valid, serves the new
    /// material to every handshake from now on; on an error the current one
    /// stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.files, &self.alpn)?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    /// Whether client certificates are required.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            path: path.to_owned(),
            what: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no CERTIFICATE in it".into(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| TlsError::Pem {
        path: path.to_owned(),
        what: format!("no private key: {error}"),
    })
}

fn build(files: &TlsFiles, alpn: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certificates(&files.cert)?;
    let key = read_key(&files.key)?;
    let config = |error: rustls::Error| TlsError::Config(error.to_string());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certificates(path)? {
                roots.add(cert).map_err(config)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| TlsError::Config(error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(config)?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// The subject common name (CN) of a DER X.509 certificate, if it parses
/// and its subject has one (the first CN, as text). Anything else, trailing
/// bytes after the certificate included, is `None`.
pub fn subject_common_name(certificate: &[u8]) -> Option<String> {
    let (rest, cert) = x509_parser::parse_x509_certificate(certificate).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_is_read_from_the_subject_not_the_issuer() {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::new()).expect("params");
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "the-ca");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let mut leaf = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        leaf.distinguished_name
            .push(rcgen::DnType::OrganizationName, "org");
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "reader-svc");
        let leaf = leaf.signed_by(&key, &issuer).expect("leaf");
        assert_eq!(
            subject_common_name(leaf.der()).as_deref(),
            Some("reader-svc")
        );
        assert_eq!(
            subject_common_name(ca_cert.der()).as_deref(),
            Some("the-ca")
        );
        let mut none = rcgen::CertificateParams::new(vec!["x".into()]).expect("params");
        none.distinguished_name = rcgen::DistinguishedName::new();
        let none = none.self_signed(&key).expect("no cn");
        assert_eq!(subject_common_name(none.der()), None);
        assert_eq!(subject_common_name(&leaf.der()[..40]), None, "truncated");
        assert_eq!(subject_common_name(b""), None);
    }

    proptest::proptest! {
        /// Fuzz target: arbitrary bytes, and certificates cut or changed at
        /// one byte, never panic; a changed certificate's CN, if one is read,
        /// is text.
        #[test]
        fn fuzz_subject_common_name(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            at in 0usize..4096,
            flip in 1u8..=255,
        ) {
            let _ = subject_common_name(&bytes);
            let mut der = sample_certificate().to_vec();
            let at = at % der.len();
            let _ = subject_common_name(&der[..at]);
            der[at] ^= flip;
            let _ = subject_common_name(&der);
        }
    }

    /// A certificate with a subject CN, made once.
    fn sample_certificate() -> &'static [u8] {
        static DER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        DER.get_or_init(|| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(vec!["x".into()]).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "fuzz-subject");
            params.self_signed(&key).expect("cert").der().to_vec()
        })
    }

    #[tokio::test]
    async fn a_tls_peer_carries_the_subject_of_its_verified_client_certificate() {
        let issue = |issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, cn: &str| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params =
                rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            (params.signed_by(&key, issuer).expect("signed"), key)
        };
        let new_ca = |name: &str| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let cert = params.self_signed(&key).expect("ca");
            (cert, rcgen::Issuer::new(params, key))
        };
        let dir = tempfile::tempdir().expect("dir");
        let (server_ca, server_issuer) = new_ca("server-ca");
        let (client_ca, client_issuer) = new_ca("client-ca");
        let (server_cert, server_key) = issue(&server_issuer, "server");
        let (client_cert, client_key) = issue(&client_issuer, "svc-reader");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let tls = ServerTls::load(TlsFiles {
            cert: write("s.pem", server_cert.pem()),
            key: write("s.key", server_key.serialize_pem()),
            client_ca: Some(write("ca.pem", client_ca.pem())),
        })
        .expect("load");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server_ca.der().clone()).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![client_cert.der().clone()],
            PrivateKeyDer::try_from(client_key.serialize_der()).expect("key"),
        )
        .expect("client auth");
        let (near, far) = tokio::io::duplex(64 * 1024);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let (server, client) =
            tokio::join!(tls.acceptor().accept(near), connector.connect(name, far));
        let (server, _client) = (server.expect("server side"), client.expect("client side"));
        let addr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(
            crate::peer::Peer::of_tls(addr, &server),
            crate::peer::Peer::Tls {
                addr,
                subject: Some("svc-reader".into())
            }
        );
    }
}
