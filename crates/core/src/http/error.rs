//! Why an HTTP request failed. Messages follow spec §6: validation failures carry the
//! `http/request …` texts of §6.1; transport failures start `http/request failed: ` and add
//! the root cause (connection refused, DNS, TLS, timeout) so the caller can act on it.

use std::time::Duration;

/// An HTTP request failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The method is not an HTTP token.
    #[error("http/request method is invalid: {0}")]
    InvalidMethod(String),
    /// The URL does not parse as an absolute URL.
    #[error("http/request url is invalid: {0}")]
    InvalidUrl(String),
    /// The URL's scheme is neither `http` nor `https`.
    #[error("http/request only supports http and https URLs, got {0}")]
    UnsupportedScheme(String),
    /// A header name is not a valid token.
    #[error("http/request header name is invalid: {0}")]
    InvalidHeaderName(String),
    /// A header value has bytes HTTP does not allow.
    #[error("http/request header value is invalid for {name}: {reason}")]
    InvalidHeaderValue {
        /// The header's name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `valueEnvVar` names a variable the executor does not have.
    #[error("http/request header {name} requires executor environment variable {var}")]
    MissingEnvVar {
        /// The header's name as given.
        name: String,
        /// The variable.
        var: String,
    },
    /// `valueEnvVar` names a variable that is empty.
    #[error("http/request header {name} requires a non-empty executor environment variable {var}")]
    EmptyEnvVar {
        /// The header's name as given.
        name: String,
        /// The variable.
        var: String,
    },
    /// The HTTP client could not be built (TLS roots, proxy settings).
    #[error("http/request failed: cannot set up the HTTP client: {0}")]
    Client(String),
    /// The request could not be sent or no response headers came back.
    #[error("http/request failed: error sending request for url ({url}){cause}")]
    Send {
        /// The request URL.
        url: String,
        /// `: ` and the root cause, or empty.
        cause: String,
    },
    /// The deadline passed before the response headers arrived.
    #[error("http/request failed: error sending request for url ({url}): timed out after {} ms", .after.as_millis())]
    Timeout {
        /// The request URL.
        url: String,
        /// The deadline the request gave.
        after: Duration,
    },
    /// The body failed mid-way (connection closed early, bad chunking, bad encoding).
    #[error("http/request failed: error reading response body{cause}")]
    Body {
        /// `: ` and the root cause, or empty.
        cause: String,
    },
    /// The deadline passed while the body was being read.
    #[error("http/request failed: response body timed out after {} ms (timeoutMs bounds the whole request)", .after.as_millis())]
    BodyTimeout {
        /// The deadline the request gave.
        after: Duration,
    },
    /// A buffered body is larger than the runner keeps in memory.
    #[error("http/request failed: response body exceeds the {limit}-byte limit for buffered responses; set streamResponse to receive it as body deltas")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

impl HttpError {
    /// Whether the request itself is wrong (the caller's fault, spec code −32602), as opposed
    /// to a failure while carrying it out (−32603).
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self,
            HttpError::InvalidMethod(_)
                | HttpError::InvalidUrl(_)
                | HttpError::UnsupportedScheme(_)
                | HttpError::InvalidHeaderName(_)
                | HttpError::InvalidHeaderValue { .. }
                | HttpError::MissingEnvVar { .. }
                | HttpError::EmptyEnvVar { .. }
        )
    }

    /// A send failure, with the innermost causes of `err` appended.
    pub(crate) fn send(url: &str, err: &(dyn std::error::Error + 'static)) -> Self {
        HttpError::Send {
            url: url.to_string(),
            cause: causes(err),
        }
    }

    /// A body failure, with the causes of `err` appended.
    pub(crate) fn body(err: &(dyn std::error::Error + 'static)) -> Self {
        HttpError::Body { cause: causes(err) }
    }
}

/// `": a: b"` for the sources below `err` (its own text is the generic reqwest one), each
/// text once; empty when there are none.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut seen: Vec<String> = Vec::new();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        // Wrappers often repeat their source's text; keep each text once.
        if !text.is_empty() && !seen.iter().any(|s| s.contains(&text) || text.contains(s)) {
            out.push_str(": ");
            out.push_str(&text);
            seen.push(text);
        }
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct E {
        text: &'static str,
        #[source]
        inner: Option<Box<E>>,
    }

    fn chain(texts: &[&'static str]) -> E {
        let mut e: Option<Box<E>> = None;
        for t in texts.iter().rev() {
            e = Some(Box::new(E { text: t, inner: e }));
        }
        *e.expect("non-empty")
    }

    #[test]
    fn send_error_keeps_the_spec_prefix_and_adds_the_root_cause() {
        let e = chain(&[
            "error sending request",
            "client error (Connect)",
            "tcp connect error",
            "Connection refused (os error 111)",
        ]);
        let msg = HttpError::send("http://127.0.0.1:9/", &e).to_string();
        assert_eq!(
            msg,
            "http/request failed: error sending request for url (http://127.0.0.1:9/): \
             client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
    }

    #[test]
    fn repeated_cause_texts_appear_once() {
        let e = chain(&["top", "io error: reset", "reset"]);
        assert_eq!(causes(&e), ": io error: reset");
        assert_eq!(causes(&chain(&["alone"])), "");
    }

    #[test]
    fn validation_errors_are_the_callers_fault() {
        assert!(HttpError::InvalidMethod("x".into()).is_invalid_request());
        assert!(HttpError::MissingEnvVar {
            name: "A".into(),
            var: "B".into()
        }
        .is_invalid_request());
        assert!(!HttpError::BodyTooLarge { limit: 1 }.is_invalid_request());
        assert!(!HttpError::Timeout {
            url: "u".into(),
            after: Duration::from_millis(5)
        }
        .is_invalid_request());
    }

    #[test]
    fn timeout_message_names_the_deadline() {
        let e = HttpError::Timeout {
            url: "http://h/".into(),
            after: Duration::from_millis(400),
        };
        assert_eq!(
            e.to_string(),
            "http/request failed: error sending request for url (http://h/): timed out after 400 ms"
        );
    }
}
