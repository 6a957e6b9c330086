//! The JSON-RPC envelope in the Codex dialect (spec §1): no `"jsonrpc"` member on output (one is
//! tolerated on input), request ids that are strings or signed 64-bit integers, `params` absent
//! or `null` treated alike, and an optional W3C `trace` member on requests.
//!
//! Decoding is a pure function of bytes ([`decode`]); params stay raw until the dispatcher knows
//! the method and decodes them with [`decode_params`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A request id: a JSON string or a signed 64-bit integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(IdRepr);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum IdRepr {
    Int(i64),
    Str(String),
}

impl RequestId {
    /// The id the server uses for errors about frames it could not decode.
    pub const MALFORMED: RequestId = RequestId(IdRepr::Int(-1));
}

impl From<i64> for RequestId {
    fn from(v: i64) -> Self {
        RequestId(IdRepr::Int(v))
    }
}

impl From<String> for RequestId {
    fn from(v: String) -> Self {
        RequestId(IdRepr::Str(v))
    }
}

impl fmt::Display for RequestId {
    /// Tells `1` from `"1"`: string ids are shown quoted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            IdRepr::Int(i) => write!(f, "{i}"),
            IdRepr::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            IdRepr::Int(i) => s.serialize_i64(*i),
            IdRepr::Str(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Int(i64),
            Str(String),
        }
        match Either::deserialize(d) {
            Ok(Either::Int(i)) => Ok(RequestId(IdRepr::Int(i))),
            Ok(Either::Str(s)) => Ok(RequestId(IdRepr::Str(s))),
            Err(_) => Err(serde::de::Error::custom(
                "data did not match any variant of untagged enum RequestId",
            )),
        }
    }
}

/// The `error` member of an error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// The JSON-RPC error code (see [`crate::codes`]).
    pub code: i64,
    /// A human-readable message; texts fixed by the spec are copied exactly.
    pub message: String,
    /// Extra machine-readable detail, e.g. `{"kind": "spawnNotFound"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl ErrorObject {
    /// An error with a code and message and no data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ErrorObject {
            code,
            message: message.into(),
            data: None,
        }
    }
}

/// W3C trace context carried by a request (`trace` member). Unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// The `traceparent` header value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The `tracestate` header value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// One decoded incoming message, borrowing its params from the frame.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A request: has `id` and `method`.
    Request {
        /// The request id, echoed in the reply.
        id: RequestId,
        /// The method name.
        method: Cow<'a, str>,
        /// The raw params; `None` when absent.
        params: Option<&'a RawValue>,
        /// The trace context, when given.
        trace: Option<TraceContext>,
    },
    /// A notification: has `method` and no `id`.
    Notification {
        /// The method name.
        method: Cow<'a, str>,
        /// The raw params; `None` when absent.
        params: Option<&'a RawValue>,
    },
    /// A response or error object sent by the client (a protocol violation for this server).
    Response,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    trace: Option<&'a RawValue>,
}

/// Keeps a member that is present, even when its value is `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Why a frame could not be decoded; its text follows serde's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one frame. Errors are answered with id `-1` and code `-32600` by the caller.
pub fn decode(frame: &[u8]) -> Result<Incoming<'_>, DecodeError> {
    if let Some(e) = not_an_object(frame, || serde_json::from_slice::<IgnoredAny>(frame)) {
        return Err(e);
    }
    let env: Envelope<'_> =
        serde_json::from_slice(frame).map_err(|e| DecodeError(e.to_string()))?;
    classify(env)
}

/// [`decode`] for a frame already known to be UTF-8 (a WebSocket text frame, a stdio line):
/// serde_json then skips its own UTF-8 checks of the strings (a whole pass over the megabytes
/// of base64 in a write).
pub fn decode_str(frame: &str) -> Result<Incoming<'_>, DecodeError> {
    if let Some(e) = not_an_object(frame.as_bytes(), || {
        serde_json::from_str::<IgnoredAny>(frame)
    }) {
        return Err(e);
    }
    let env: Envelope<'_> = serde_json::from_str(frame).map_err(|e| DecodeError(e.to_string()))?;
    classify(env)
}

/// The error for a frame that does not start with `{`: valid JSON that is not an object gets
/// a clear message, invalid JSON gets serde's.
fn not_an_object(
    frame: &[u8],
    parse: impl FnOnce() -> Result<IgnoredAny, serde_json::Error>,
) -> Option<DecodeError> {
    let first = frame.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        return None;
    }
    Some(match parse() {
        Ok(_) => DecodeError("expected a JSON-RPC object".into()),
        Err(e) => DecodeError(e.to_string()),
    })
}

/// What a decoded envelope is: request, notification or response.
fn classify(env: Envelope<'_>) -> Result<Incoming<'_>, DecodeError> {
    let params = env.params.filter(|p| p.get() != "null");
    match (env.id, env.method) {
        (Some(id), Some(method)) => {
            let id: RequestId =
                serde_json::from_str(id.get()).map_err(|e| DecodeError(e.to_string()))?;
            let trace = match env.trace {
                None => None,
                Some(raw) => serde_json::from_str::<Option<TraceContext>>(raw.get())
                    .map_err(|e| DecodeError(e.to_string()))?,
            };
            Ok(Incoming::Request {
                id,
                method,
                params,
                trace,
            })
        }
        (None, Some(method)) => Ok(Incoming::Notification { method, params }),
        (Some(_), None) if env.result.is_some() || env.error.is_some() => Ok(Incoming::Response),
        _ => Err(DecodeError(
            "data did not match any variant of untagged enum JSONRPCMessage".into(),
        )),
    }
}

/// Decodes a method's params. Absent params decode like `null`; if decoding fails and the
/// params were exactly `{}`, decoding is retried as `null` (so unit params accept `{}`).
pub fn decode_params<P: DeserializeOwned>(raw: Option<&RawValue>) -> Result<P, String> {
    decode_params_text(raw.map(RawValue::get).unwrap_or("null"))
}

/// [`decode_params`] of the params' JSON text.
pub fn decode_params_text<P: DeserializeOwned>(text: &str) -> Result<P, String> {
    match serde_json::from_str::<P>(text) {
        Ok(p) => Ok(p),
        Err(e) => {
            if is_empty_object(text) {
                if let Ok(p) = serde_json::from_str::<P>("null") {
                    return Ok(p);
                }
            }
            Err(strip_position(&e))
        }
    }
}

fn is_empty_object(text: &str) -> bool {
    let t = text.trim();
    t.starts_with('{') && t.ends_with('}') && t[1..t.len() - 1].trim().is_empty()
}

/// serde_json appends " at line L column C"; upstream's messages do not carry it.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) if e.line() > 0 => s[..i].to_string(),
        _ => s,
    }
}

/// Encodes a success response: `{"id":…,"result":…}`.
pub fn encode_result<R: Serialize>(id: &RequestId, result: &R) -> String {
    #[derive(Serialize)]
    struct Ok<'a, R> {
        id: &'a RequestId,
        result: &'a R,
    }
    serde_json::to_string(&Ok { id, result }).unwrap_or_else(|e| {
        encode_error(
            id,
            &ErrorObject::new(crate::codes::INTERNAL_ERROR, e.to_string()),
        )
    })
}

/// Encodes an error response: `{"error":{…},"id":…}`.
pub fn encode_error(id: &RequestId, error: &ErrorObject) -> String {
    #[derive(Serialize)]
    struct Err<'a> {
        error: &'a ErrorObject,
        id: &'a RequestId,
    }
    serde_json::to_string(&Err { error, id })
        .unwrap_or_else(|_| r#"{"error":{"code":-32603,"message":"encode failed"},"id":-1}"#.into())
}

/// Encodes a notification: `{"method":…,"params":…}`.
pub fn encode_notification<P: Serialize>(method: &str, params: &P) -> String {
    #[derive(Serialize)]
    struct Note<'a, P> {
        method: &'a str,
        params: &'a P,
    }
    serde_json::to_string(&Note { method, params }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> (RequestId, String, Option<String>) {
        match decode(s.as_bytes()).unwrap() {
            Incoming::Request {
                id, method, params, ..
            } => (id, method.to_string(), params.map(|p| p.get().to_string())),
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn decodes_requests_with_int_and_string_ids() {
        let (id, m, p) = req(r#"{"id":1,"method":"a/b","params":{"x":1}}"#);
        assert_eq!(id.to_string(), "1");
        assert_eq!(m, "a/b");
        assert_eq!(p.as_deref(), Some(r#"{"x":1}"#));
        let (id, _, p) = req(r#"{"jsonrpc":"2.0","id":"1","method":"a","params":null}"#);
        assert_eq!(id.to_string(), "\"1\"");
        assert_eq!(p, None);
        let (id, _, _) = req(r#"{"id":9007199254740993,"method":"a"}"#);
        assert_eq!(
            encode_result(&id, &()),
            r#"{"id":9007199254740993,"result":null}"#
        );
    }

    #[test]
    fn rejects_bad_ids_and_non_objects() {
        for bad in [
            r#"{"id":null,"method":"a"}"#,
            r#"{"id":1.5,"method":"a"}"#,
            r#"{"id":[1],"method":"a"}"#,
            r#"{"id":{"a":1},"method":"a"}"#,
            "[]",
            "42",
            "null",
            "\"s\"",
            "",
            "{not json",
            r#"{"id":1,"method":"a","trace":"x"}"#,
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn decode_str_gives_what_decode_gives() {
        for text in [
            r#"{"id":1,"method":"a","params":{"x":"y"}}"#,
            r#"{"id":"s","method":"a","params":null,"trace":{"traceparent":"t"}}"#,
            r#"{"method":"initialized"}"#,
            r#"{"id":3,"result":{}}"#,
            r#"{"id":null,"method":"a"}"#,
            "[]",
            "42",
            "",
            "{not json",
            r#"{"id":1,"method":"a","params":{"x":"\u00e9\n"}}"#,
        ] {
            let bytes = format!("{:?}", decode(text.as_bytes()));
            let str = format!("{:?}", decode_str(text));
            assert_eq!(bytes, str, "{text}");
        }
    }

    #[test]
    fn classifies_notifications_and_responses() {
        match decode(br#"{"method":"initialized"}"#).unwrap() {
            Incoming::Notification { method, .. } => assert_eq!(method, "initialized"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(br#"{"id":3,"result":{}}"#).unwrap(),
            Incoming::Response
        ));
        assert!(matches!(
            decode(br#"{"id":3,"error":{"code":1,"message":"x"}}"#).unwrap(),
            Incoming::Response
        ));
    }

    #[test]
    fn params_rules() {
        #[derive(Deserialize, Debug)]
        #[serde(rename_all = "camelCase")]
        struct P {
            #[allow(dead_code)]
            client_name: String,
        }
        let raw = RawValue::from_string("{}".into()).unwrap();
        assert_eq!(decode_params::<()>(Some(&raw)), Ok(()));
        assert_eq!(decode_params::<()>(None), Ok(()));
        let arr = RawValue::from_string("[]".into()).unwrap();
        assert!(decode_params::<()>(Some(&arr)).is_err());
        let err = decode_params::<P>(None).unwrap_err();
        assert_eq!(err, "invalid type: null, expected struct P");
        let err = decode_params::<P>(Some(&raw)).unwrap_err();
        assert_eq!(err, "missing field `clientName`");
    }

    #[test]
    fn encodes_errors_error_first() {
        let e = ErrorObject::new(-32600, "bad");
        assert_eq!(
            encode_error(&RequestId::MALFORMED, &e),
            r#"{"error":{"code":-32600,"message":"bad"},"id":-1}"#
        );
    }
}
