//! `environment/info` and `environment/status`.

use exec_server_protocol::environment::EnvironmentStatus;
use serde_json::value::RawValue;

use crate::dispatch::Call;
use crate::rpc_error::RpcError;

/// The environment as encoded once at startup.
pub(crate) async fn info(call: Call, _: ()) -> Result<Box<RawValue>, RpcError> {
    Ok(call.state.environment_json.clone())
}

pub(crate) async fn status(_: Call, _: ()) -> Result<EnvironmentStatus, RpcError> {
    Ok(EnvironmentStatus {
        status: "ready".into(),
    })
}
