//! Wire types of the exec-server JSON-RPC protocol: the envelope, every method's params and
//! result, notifications, error codes and `PathUri`.
//!
//! This crate has no I/O and no async runtime. Each method is declared once as a type that
//! implements [`Method`], carrying its name, params and result; the server's dispatcher and the
//! typed client are both generic over it, so a method string appears in exactly one place.
#![deny(missing_docs)]

pub mod bytes;
pub mod codes;
pub mod environment;
pub mod fs;
pub mod http;
pub mod initialize;
pub mod jsonrpc;
pub mod path_uri;
pub mod process;

pub use jsonrpc::{ErrorObject, Incoming, RequestId};
pub use path_uri::{PathUri, PathUriError};

/// A JSON-RPC request method: its wire name, params and result types.
pub trait Method {
    /// The method name on the wire, e.g. `process/start`.
    const NAME: &'static str;
    /// The decoded params.
    type Params: serde::de::DeserializeOwned + serde::Serialize + Send + 'static;
    /// The result sent back on success.
    type Result: serde::Serialize + serde::de::DeserializeOwned + Send + 'static;
}

/// A server-to-client notification: its wire name and params type.
pub trait Notification {
    /// The method name on the wire, e.g. `process/output`.
    const NAME: &'static str;
    /// The params object.
    type Params: serde::Serialize + serde::de::DeserializeOwned + Send + 'static;
}

/// Declares a method type implementing [`Method`].
macro_rules! method {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $params:ty, $result:ty) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $ty {}
        impl $crate::Method for $ty {
            const NAME: &'static str = $name;
            type Params = $params;
            type Result = $result;
        }
    };
}
pub(crate) use method;

/// Declares a notification type implementing [`Notification`].
macro_rules! notification {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $params:ty) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $ty {}
        impl $crate::Notification for $ty {
            const NAME: &'static str = $name;
            type Params = $params;
        }
    };
}
pub(crate) use notification;

/// An empty JSON object, the result of methods that return `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Empty {}
