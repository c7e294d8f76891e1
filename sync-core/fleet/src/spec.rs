//! The `--follow MAP=etcd[s]://HOST:PORT[,HOST:PORT]/PREFIX` argument
//! (`etcds://`: TLS, see [`crate::EtcdTls`]).

use crate::follower::FollowConfig;

/// Why a follow spec does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad follow spec `{spec}`: {why} (want MAP=etcd[s]://HOST:PORT[,HOST:PORT]/PREFIX)")]
pub struct SpecError {
    spec: String,
    why: &'static str,
}

/// Parses `MAP=etcd[s]://HOST:PORT[,HOST:PORT]/PREFIX` into a config with
/// the default timings; `etcds://` sets an empty [`crate::EtcdTls`] for the
/// caller to fill with the CA (and client identity).
pub fn parse_follow(spec: &str) -> Result<FollowConfig, SpecError> {
    let bad = |why| SpecError {
        spec: spec.to_owned(),
        why,
    };
    let (map, url) = spec.split_once('=').ok_or_else(|| bad("no MAP="))?;
    if map.is_empty() {
        return Err(bad("empty map name"));
    }
    let (rest, tls) = match (url.strip_prefix("etcd://"), url.strip_prefix("etcds://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err(bad("the URL must start with etcd:// or etcds://")),
    };
    let (hosts, prefix) = rest.split_once('/').ok_or_else(|| bad("no /PREFIX"))?;
    if prefix.trim_matches('/').is_empty() {
        return Err(bad("empty prefix"));
    }
    let endpoints: Vec<String> = hosts.split(',').map(str::to_owned).collect();
    if endpoints.iter().any(|e| {
        e.rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    }) {
        return Err(bad("each endpoint must be HOST:PORT"));
    }
    let mut config = FollowConfig::new(map, endpoints, prefix);
    config.tls = tls.then(crate::EtcdTls::default);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        let cfg = parse_follow("flows=etcd://10.0.0.1:2379,10.0.0.2:2379/fleet/flows").expect("ok");
        assert_eq!(cfg.map, "flows");
        assert_eq!(cfg.endpoints, vec!["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(cfg.prefix, "fleet/flows");
        assert!(cfg.tls.is_none());
        let tls = parse_follow("flows=etcds://h:1/p").expect("ok");
        assert_eq!(tls.tls, Some(crate::EtcdTls::default()));
        for (spec, why) in [
            ("flows", "no MAP="),
            ("=etcd://h:1/p", "empty map name"),
            (
                "m=http://h:1/p",
                "the URL must start with etcd:// or etcds://",
            ),
            ("m=etcd://h:1", "no /PREFIX"),
            ("m=etcd://h:1/", "empty prefix"),
            ("m=etcd://h/p", "each endpoint must be HOST:PORT"),
            ("m=etcd://h:1,:2/p", "each endpoint must be HOST:PORT"),
        ] {
            assert_eq!(parse_follow(spec).unwrap_err().why, why, "{spec}");
        }
    }
}
