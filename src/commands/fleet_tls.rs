//! `--etcd-ca/--etcd-cert/--etcd-key`: TLS to etcd for `serve --follow
//! MAP=etcds://...` and the `fleet` commands.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use mapsync_fleet::{EtcdTls, FollowConfig};

/// TLS to etcd.
#[derive(Args, Debug, Default, Clone)]
pub struct EtcdTlsArgs {
    /// The CA (PEM) that signed etcd's certificate: TLS to etcd (serve:
    /// for the `etcds://` follows).
    #[arg(long, value_name = "PEM")]
    pub etcd_ca: Option<PathBuf>,
    /// A client certificate (PEM) for etcd's `--client-cert-auth`.
    #[arg(long, value_name = "PEM", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "PEM", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
}

impl EtcdTlsArgs {
    /// The TLS config, read now; `None` without `--etcd-ca`.
    pub fn tls(&self) -> anyhow::Result<Option<EtcdTls>> {
        let Some(ca) = &self.etcd_ca else {
            anyhow::ensure!(
                self.etcd_cert.is_none(),
                "--etcd-cert needs --etcd-ca (the CA that signed etcd's certificate)"
            );
            return Ok(None);
        };
        let identity = self.etcd_cert.as_deref().zip(self.etcd_key.as_deref());
        Ok(Some(
            EtcdTls::from_files(Some(ca), identity).context("TLS to etcd")?,
        ))
    }

    /// Fills the TLS of the `etcds://` follows; a follow over TLS without
    /// a CA, or a CA with no `etcds://` follow, is an error.
    pub fn apply(&self, follows: &mut [FollowConfig]) -> anyhow::Result<()> {
        let tls = self.tls()?;
        let secure = follows.iter().filter(|f| f.tls.is_some()).count();
        match (&tls, secure) {
            (None, 0) | (Some(_), 1..) => {}
            (None, _) => anyhow::bail!(
                "--follow with etcds:// needs --etcd-ca (the CA that signed etcd's certificate)"
            ),
            (Some(_), 0) => {
                anyhow::bail!("--etcd-ca is given but no --follow uses etcds://")
            }
        }
        for follow in follows.iter_mut().filter(|f| f.tls.is_some()) {
            follow.tls = tls.clone();
        }
        Ok(())
    }
}
