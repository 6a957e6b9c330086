//! `http/request`: executor-side HTTP (issue 5; not implemented yet).

use exec_server_protocol::http::{HttpRequestParams, HttpRequestResult};

use crate::dispatch::Call;
use crate::rpc_error::RpcError;

pub(crate) async fn request(_: Call, _: HttpRequestParams) -> Result<HttpRequestResult, RpcError> {
    Err(RpcError::internal(
        "http/request is not implemented by this executor yet",
    ))
}
