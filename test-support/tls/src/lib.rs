//! Certificates for TLS tests, made on the spot with rcgen: a CA, and the
//! server and client certificates it signs. A crate of its own (not a module
//! of `mapsync-test-support`) so that tests without a BPF toolchain, the
//! Rust client's, can use it.

#![deny(missing_docs)]

use std::path::{Path, PathBuf};

/// A certificate authority made by the test.
pub struct TestCa {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A certificate signed by a [`TestCa`], with its private key (both PEM).
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
}

impl TestCa {
    /// A self-signed CA whose subject's common name is `common_name`.
    pub fn new(common_name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("generate the CA key");
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("CA parameters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("self-sign the CA");
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// The CA's certificate, PEM (what a peer trusts).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Writes the CA's certificate to `path`.
    pub fn write_pem(&self, path: &Path) {
        std::fs::write(path, &self.pem).expect("write the CA certificate");
    }

    /// Writes the CA's certificate into `dir` as `file`: its path.
    pub fn write_into(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        self.write_pem(&path);
        path
    }

    /// A certificate for the subject alternative names `names` (DNS names
    /// or IP addresses such as `127.0.0.1`), with the subject's common name
    /// `common_name` if given (rcgen's default subject otherwise).
    pub fn issue(&self, names: &[&str], common_name: Option<&str>) -> Issued {
        let key = rcgen::KeyPair::generate().expect("generate a key");
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("certificate parameters");
        if let Some(common_name) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, common_name);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign the certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Issued {
    /// Writes the certificate to `cert` and the key to `key`.
    pub fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).expect("write the certificate");
        std::fs::write(key, &self.key_pem).expect("write the key");
    }

    /// Writes the certificate and key into `dir` as `NAME.pem` and
    /// `NAME.key`: their paths.
    pub fn write_into(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        self.write(&cert, &key);
        (cert, key)
    }

    /// The certificate and key as a pair of PEM strings.
    pub fn into_pems(self) -> (String, String) {
        (self.cert_pem, self.key_pem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_are_pem_and_distinct() {
        let ca = TestCa::new("test CA");
        assert!(ca.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let first = ca.issue(&["localhost"], Some("reader"));
        let second = ca.issue(&["127.0.0.1"], None);
        assert!(first.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(first.key_pem.contains("PRIVATE KEY"));
        assert_ne!(first.cert_pem, second.cert_pem);
        assert_ne!(first.key_pem, second.key_pem);
    }
}
