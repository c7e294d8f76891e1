//! The service's side of authorization: each RPC authenticates its request
//! once ([`MapSyncService::authenticate`]) and checks the maps it names
//! against the result ([`Authed::check`]); see [`crate::authz`].

use std::sync::Arc;

use tonic::Request;

use super::MapSyncService;
use crate::authz::{Access, AuthError, Authorizer, Caller, Credentials};

/// A request's credentials and who they are.
#[derive(Debug, Clone)]
pub struct Authed {
    authz: Arc<Authorizer>,
    rpc: &'static str,
    /// What the request carried.
    pub credentials: Credentials,
    /// Who that is.
    pub caller: Caller,
}

impl MapSyncService {
    /// Who sent `request` (for the RPC `rpc`), or `UNAUTHENTICATED`.
    pub(super) fn authenticate<T>(
        &self,
        request: &Request<T>,
        rpc: &'static str,
    ) -> Result<Authed, AuthError> {
        let credentials = Credentials::of(request);
        let caller = self.authz.caller(&credentials, rpc)?;
        Ok(Authed {
            authz: self.authz.clone(),
            rpc,
            credentials,
            caller,
        })
    }
}

impl Authed {
    /// Checks `access` to each map of `maps` (`PERMISSION_DENIED` on the
    /// first that is refused).
    pub fn check<'a>(
        &self,
        access: Access,
        maps: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), AuthError> {
        self.authz
            .check(&self.caller, &self.credentials, self.rpc, access, maps)
    }

    /// Whether the caller may read `map` (for what `ListMaps` and `Status`
    /// show; not counted as a refusal).
    pub fn may_read(&self, map: &str) -> bool {
        Authorizer::allows(&self.caller, map, Access::Read)
    }

    /// Who the caller is, again under the current policy (a Watch stream
    /// checks each create against the policy in force then).
    pub fn refreshed(&self) -> Result<Authed, AuthError> {
        let caller = self.authz.caller(&self.credentials, self.rpc)?;
        Ok(Authed {
            caller,
            ..self.clone()
        })
    }

    /// The authorizer, for counting refusals made elsewhere.
    pub fn authorizer(&self) -> &Authorizer {
        &self.authz
    }
}
