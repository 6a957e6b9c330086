//! `environment/info` and `environment/status`.

use exec_server_protocol::environment::{EnvironmentInfo, EnvironmentStatus};

use crate::dispatch::Call;
use crate::rpc_error::RpcError;

pub(crate) async fn info(call: Call, _: ()) -> Result<EnvironmentInfo, RpcError> {
    Ok(call.state.environment.clone())
}

pub(crate) async fn status(_: Call, _: ()) -> Result<EnvironmentStatus, RpcError> {
    Ok(EnvironmentStatus {
        status: "ready".into(),
    })
}
