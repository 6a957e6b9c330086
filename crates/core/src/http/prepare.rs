//! Validation of an [`HttpRequest`] into the pieces a client sends: method, URL and headers
//! (with `valueEnvVar` values filled in). Pure functions of the request and an environment
//! lookup, so every spec §6.1 error is tested without a network.

use std::ffi::OsString;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT_ENCODING};
use reqwest::Method;

use super::{HttpError, HttpHeader, HttpRequest};

/// A request that passed validation.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) method: Method,
    pub(crate) url: url::Url,
    /// Headers in the caller's order; values from the environment are marked sensitive.
    pub(crate) headers: HeaderMap,
    /// The caller chose the content codings itself: the body is passed through raw.
    pub(crate) caller_accept_encoding: bool,
}

/// Validates `req`, reading `valueEnvVar` variables through `env`.
pub(crate) fn prepare(
    req: &HttpRequest,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Prepared, HttpError> {
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|e| HttpError::InvalidMethod(e.to_string()))?;
    let url = url::Url::parse(&req.url).map_err(|e| HttpError::InvalidUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(HttpError::UnsupportedScheme(url.scheme().to_string()));
    }
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in &req.headers {
        let (name, value) = header(h, &env)?;
        headers.append(name, value);
    }
    let caller_accept_encoding = headers.contains_key(ACCEPT_ENCODING);
    Ok(Prepared {
        method,
        url,
        headers,
        caller_accept_encoding,
    })
}

fn header(
    h: &HttpHeader,
    env: &impl Fn(&str) -> Option<OsString>,
) -> Result<(HeaderName, HeaderValue), HttpError> {
    let name = HeaderName::from_bytes(h.name.as_bytes())
        .map_err(|e| HttpError::InvalidHeaderName(e.to_string()))?;
    let invalid_value = |e: reqwest::header::InvalidHeaderValue| HttpError::InvalidHeaderValue {
        name: h.name.clone(),
        reason: e.to_string(),
    };
    let Some(var) = &h.value_env_var else {
        return Ok((
            name,
            HeaderValue::from_str(&h.value).map_err(invalid_value)?,
        ));
    };
    let secret = env(var).ok_or_else(|| HttpError::MissingEnvVar {
        name: h.name.clone(),
        var: var.clone(),
    })?;
    if secret.is_empty() {
        return Err(HttpError::EmptyEnvVar {
            name: h.name.clone(),
            var: var.clone(),
        });
    }
    let mut bytes = h.value.as_bytes().to_vec();
    bytes.extend_from_slice(secret.as_encoded_bytes());
    let mut value = HeaderValue::from_bytes(&bytes).map_err(invalid_value)?;
    // Keeps the value out of debug output (reqwest, hyper and our own logs).
    value.set_sensitive(true);
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, url: &str, headers: Vec<HttpHeader>) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            url: url.into(),
            headers,
            ..HttpRequest::default()
        }
    }

    fn h(name: &str, value: &str, var: Option<&str>) -> HttpHeader {
        HttpHeader {
            name: name.into(),
            value: value.into(),
            value_env_var: var.map(str::to_string),
        }
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn err(r: HttpRequest) -> String {
        prepare(&r, |v| (v == "EMPTY").then(OsString::new))
            .expect_err("should fail")
            .to_string()
    }

    #[test]
    fn methods_are_sent_verbatim() {
        let p = prepare(&req("get", "http://h/", vec![]), no_env).expect("valid");
        assert_eq!(p.method.as_str(), "get");
        let p = prepare(&req("FOO", "http://h/", vec![]), no_env).expect("valid");
        assert_eq!(p.method.as_str(), "FOO");
        assert_eq!(
            err(req("GE T", "http://h/", vec![])),
            "http/request method is invalid: invalid HTTP method"
        );
    }

    #[test]
    fn urls_must_be_absolute_http() {
        assert_eq!(
            err(req("GET", "/relative", vec![])),
            "http/request url is invalid: relative URL without a base"
        );
        assert_eq!(
            err(req("GET", "ftp://127.0.0.1/x", vec![])),
            "http/request only supports http and https URLs, got ftp"
        );
        assert_eq!(
            err(req("GET", "file:///etc/hostname", vec![])),
            "http/request only supports http and https URLs, got file"
        );
        assert!(prepare(&req("GET", "https://h:8443/a?b", vec![]), no_env).is_ok());
    }

    #[test]
    fn headers_keep_order_and_repeats() {
        let p = prepare(
            &req(
                "GET",
                "http://h/",
                vec![
                    h("X-Rep", "a", None),
                    h("X-Other", "c", None),
                    h("x-rep", "b", None),
                ],
            ),
            no_env,
        )
        .expect("valid");
        let reps: Vec<_> = p.headers.get_all("x-rep").iter().collect();
        assert_eq!(reps, ["a", "b"]);
        assert!(!p.caller_accept_encoding);
    }

    #[test]
    fn bad_header_names_and_values_are_rejected() {
        assert_eq!(
            err(req("GET", "http://h/", vec![h("bad name", "v", None)])),
            "http/request header name is invalid: invalid HTTP header name"
        );
        assert_eq!(
            err(req("GET", "http://h/", vec![h("X-A", "a\nb", None)])),
            "http/request header value is invalid for X-A: failed to parse header value"
        );
    }

    #[test]
    fn env_var_headers_append_the_executor_value() {
        let p = prepare(
            &req(
                "GET",
                "http://h/",
                vec![h("Authorization", "Bearer ", Some("TOKEN"))],
            ),
            |v| (v == "TOKEN").then(|| OsString::from("s3cret")),
        )
        .expect("valid");
        let v = p.headers.get("authorization").expect("set");
        assert_eq!(v, "Bearer s3cret");
        assert!(v.is_sensitive());
        assert!(!format!("{:?}", p.headers).contains("s3cret"));
    }

    #[test]
    fn missing_or_empty_env_vars_are_rejected() {
        assert_eq!(
            err(req(
                "GET",
                "http://h/",
                vec![h("Authorization", "Bearer ", Some("NOPE"))]
            )),
            "http/request header Authorization requires executor environment variable NOPE"
        );
        assert_eq!(
            err(req("GET", "http://h/", vec![h("Authorization", "", Some("EMPTY"))])),
            "http/request header Authorization requires a non-empty executor environment variable EMPTY"
        );
    }

    #[test]
    fn caller_accept_encoding_is_noticed_in_any_case() {
        let p = prepare(
            &req("GET", "http://h/", vec![h("Accept-Encoding", "gzip", None)]),
            no_env,
        )
        .expect("valid");
        assert!(p.caller_accept_encoding);
    }
}
