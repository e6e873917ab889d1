//! Extractors whose rejections are problems: a JSON body read under the configured size
//! limit, path parameters and query strings.
//!
//! axum's own `Json` answers bad input in plain text with statuses we do not choose; these
//! classify each failure (not JSON → `malformed-json` 400; valid JSON of the wrong shape →
//! `invalid-input` 422; too big → `payload-too-large` 413) so clients can branch on `type`.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use serde::de::DeserializeOwned;
use weir_api::ProblemType;

/// A JSON request body.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default();
            let essence = ct.split(';').next().unwrap_or_default().trim();
            let json = essence.eq_ignore_ascii_case("application/json")
                || (essence.starts_with("application/") && essence.ends_with("+json"));
            if !json {
                return Err(ApiError::new(
                    ProblemType::UnsupportedMediaType,
                    format!("content-type {ct:?}; send application/json"),
                ));
            }
        }
        let limit = state.config().max_body_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| {
                ApiError::new(
                    ProblemType::PayloadTooLarge,
                    format!("request body over the limit of {limit} bytes"),
                )
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a body, telling malformed JSON apart from JSON of the wrong shape.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::invalid(&field_of(&e.to_string()), e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::new(ProblemType::MalformedJson, e.to_string())
            }
        }
    })
}

/// The field serde names in its message (`missing field `queue``, `unknown field `x``),
/// or `body` when it names none.
fn field_of(msg: &str) -> String {
    for marker in ["missing field `", "unknown field `"] {
        if let Some(rest) = msg.split(marker).nth(1) {
            if let Some(name) = rest.split('`').next() {
                return name.to_string();
            }
        }
    }
    "body".to_string()
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::invalid("path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::invalid("query", r.body_text())
    }
}

/// Path parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// A query string.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        queue: String,
        n: u32,
    }

    fn kind(r: Result<Body, ApiError>) -> (&'static str, Option<String>) {
        let e = r.unwrap_err().0;
        (e.kind().map_or("?", |k| k.slug()), e.field)
    }

    #[test]
    fn failures_are_classified() {
        assert_eq!(kind(parse_json(b"{")).0, "malformed-json");
        assert_eq!(kind(parse_json(b"not json")).0, "malformed-json");
        assert_eq!(
            kind(parse_json(br#"{"n":1}"#)),
            ("invalid-input", Some("queue".into()))
        );
        assert_eq!(
            kind(parse_json(br#"{"queue":"q","n":1,"x":2}"#)),
            ("invalid-input", Some("x".into()))
        );
        assert_eq!(
            kind(parse_json(br#"{"queue":"q","n":"one"}"#)),
            ("invalid-input", Some("body".into()))
        );
        assert!(parse_json::<Body>(br#"{"queue":"q","n":1}"#).is_ok());
    }
}
