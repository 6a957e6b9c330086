//! `enforceManagedNetwork` on `process/start`: the `managedNetwork` context becomes the
//! sandbox's [`ManagedNetwork`], and the child's environment points at the proxy.
//!
//! The process then runs in a network namespace of its own where only the listed loopback
//! ports lead out, to the same ports on the host's loopback (see the sandbox crate's `net`
//! module). Without a context it fails closed: the namespace has no way out at all.
//! Unix sockets are not filtered by this layer (`allowUnixSockets` and
//! `dangerouslyAllowAllUnixSockets` are accepted and ignored): a socket path is reachable
//! exactly when the filesystem sandbox lets the process reach the path.

use std::collections::HashMap;

use exec_server_protocol::process::ManagedNetworkSandboxContext;
use exec_server_sandbox::ManagedNetwork;

/// Proxy variables set to the first allowed port when the request's env lacks them.
pub const PROXY_ENV_KEYS: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// Why a managed network cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagedNetworkError {
    /// A port is 0 or there are too many.
    #[error("{0}")]
    Invalid(String),
    /// This kernel cannot enforce it; nothing runs.
    #[error("{0}")]
    Unavailable(String),
}

/// The managed network for `ctx` (`None`: no port leads out).
pub fn resolve(
    ctx: Option<&ManagedNetworkSandboxContext>,
) -> Result<ManagedNetwork, ManagedNetworkError> {
    exec_server_sandbox::probe()
        .managed_network()
        .map_err(ManagedNetworkError::Unavailable)?;
    let Some(ctx) = ctx else {
        return Ok(ManagedNetwork::default());
    };
    let mut ports = ctx.loopback_ports.clone().unwrap_or_default();
    if ports.contains(&0) {
        return Err(ManagedNetworkError::Invalid(
            "managedNetwork.loopbackPorts must not contain port 0".into(),
        ));
    }
    ports.sort_unstable();
    ports.dedup();
    if ports.len() > ManagedNetwork::MAX_PORTS {
        return Err(ManagedNetworkError::Invalid(format!(
            "managedNetwork.loopbackPorts lists more than {} ports",
            ManagedNetwork::MAX_PORTS
        )));
    }
    Ok(ManagedNetwork {
        loopback_ports: ports,
        allow_local_binding: ctx.allow_local_binding.unwrap_or(false),
    })
}

/// Points the proxy variables the request did not set at the first allowed port (the
/// ports keep their numbers inside the namespace, so values the client set stay valid).
pub fn proxy_env(env: &mut HashMap<String, String>, net: &ManagedNetwork) {
    let Some(port) = net.loopback_ports.first() else {
        return;
    };
    let url = format!("http://127.0.0.1:{port}");
    for key in PROXY_ENV_KEYS {
        env.entry(key.to_string()).or_insert_with(|| url.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_env_fills_only_missing_keys() {
        let net = ManagedNetwork {
            loopback_ports: vec![3128, 8080],
            allow_local_binding: false,
        };
        let mut env = HashMap::from([("HTTPS_PROXY".to_string(), "http://localhost:8080".into())]);
        proxy_env(&mut env, &net);
        assert_eq!(env["HTTP_PROXY"], "http://127.0.0.1:3128");
        assert_eq!(env["HTTPS_PROXY"], "http://localhost:8080");
        assert_eq!(env["all_proxy"], "http://127.0.0.1:3128");
    }

    #[test]
    fn port_zero_is_refused_and_duplicates_merge() {
        if exec_server_sandbox::probe().managed_network().is_err() {
            eprintln!("skipped: no network namespaces here");
            return;
        }
        let ctx = ManagedNetworkSandboxContext {
            loopback_ports: Some(vec![0]),
            ..Default::default()
        };
        assert!(matches!(
            resolve(Some(&ctx)),
            Err(ManagedNetworkError::Invalid(_))
        ));
        let ctx = ManagedNetworkSandboxContext {
            loopback_ports: Some(vec![9, 9, 7]),
            ..Default::default()
        };
        assert_eq!(resolve(Some(&ctx)).unwrap().loopback_ports, vec![7, 9]);
        assert_eq!(resolve(None).unwrap(), ManagedNetwork::default());
    }
}
