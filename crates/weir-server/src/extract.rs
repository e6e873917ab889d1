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

/// Parses a body, telling malformed JSON apart from JSON of the wrong shape; a wrong shape
/// names the JSON path of the bad field (`jobs[3].priority`) and the JSON type it needs.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = parsed.map_err(|e| {
        use serde_json::error::Category;
        let path = json_path(e.path());
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data => {
                let msg = json_words(&inner.to_string());
                let field = match named_field(&msg) {
                    Some(name) if path.is_empty() => name.to_string(),
                    Some(name) if !path.ends_with(name) => format!("{path}.{name}"),
                    _ if path.is_empty() => "body".to_string(),
                    _ => path,
                };
                ApiError::invalid(&field, format!("{field}: {msg}"))
            }
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::new(ProblemType::MalformedJson, inner.to_string())
            }
        }
    })?;
    de.end()
        .map_err(|e| ApiError::new(ProblemType::MalformedJson, e.to_string()))?;
    Ok(value)
}

/// `jobs[3].priority` from serde's path; empty for the document itself.
fn json_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out += &format!("[{index}]"),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out += key;
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// The field serde names in its message (`missing field `queue``, `unknown field `x``).
fn named_field(msg: &str) -> Option<&str> {
    ["missing field `", "unknown field `"]
        .iter()
        .find_map(|marker| msg.split(marker).nth(1))
        .and_then(|rest| rest.split('`').next())
}

/// serde's message in JSON's words: `expected i32` becomes `expected an integer from
/// -2147483648 to 2147483647`, `expected struct EnqueueRequest` becomes `expected an
/// object`, so that no Rust type name reaches a client; the position is dropped (the path
/// says where).
fn json_words(msg: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    let ints: [(&str, String); 10] = [
        ("i8", format!("an integer from {} to {}", i8::MIN, i8::MAX)),
        (
            "i16",
            format!("an integer from {} to {}", i16::MIN, i16::MAX),
        ),
        (
            "i32",
            format!("an integer from {} to {}", i32::MIN, i32::MAX),
        ),
        (
            "i64",
            format!("an integer from {} to {}", i64::MIN, i64::MAX),
        ),
        (
            "isize",
            format!("an integer from {} to {}", i64::MIN, i64::MAX),
        ),
        ("u8", format!("an integer from 0 to {}", u8::MAX)),
        ("u16", format!("an integer from 0 to {}", u16::MAX)),
        ("u32", format!("an integer from 0 to {}", u32::MAX)),
        ("u64", format!("an integer from 0 to {}", u64::MAX)),
        ("usize", format!("an integer from 0 to {}", u64::MAX)),
    ];
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("expected ") {
        out += &rest[..i + "expected ".len()];
        rest = &rest[i + "expected ".len()..];
        let word_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let word = &rest[..word_end];
        if let Some((_, json)) = ints.iter().find(|(t, _)| *t == word) {
            out += json;
            rest = &rest[word_end..];
        } else if word == "f32" || word == "f64" {
            out += "a number";
            rest = &rest[word_end..];
        } else if word == "struct" || word == "map" {
            out += "an object";
            rest = rest[word_end..].trim_start();
            // Drop the struct's name.
            let name_end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if word == "struct" {
                rest = &rest[name_end..];
            }
        } else if rest.starts_with("a sequence") {
            out += "an array";
            rest = &rest["a sequence".len()..];
        } else if rest.starts_with("a borrowed string") {
            out += "a string";
            rest = &rest["a borrowed string".len()..];
        }
    }
    out += rest;
    out
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
            ("invalid-input", Some("n".into()))
        );
        assert_eq!(
            kind(parse_json(br#"{"queue":"q","n":1} x"#)).0,
            "malformed-json"
        );
        assert!(parse_json::<Body>(br#"{"queue":"q","n":1}"#).is_ok());
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Batch {
        jobs: Vec<Body>,
    }

    /// Regression: 422s named `"field": "body"` and said "expected struct EnqueueRequest" or
    /// "expected i32": Rust names, and no path to the bad field.
    #[test]
    fn a_wrong_shape_names_the_json_path_and_the_json_type() {
        let e = |body: &[u8]| parse_json::<Batch>(body).unwrap_err().0;
        let p = e(br#"{"jobs":[{"queue":"q","n":1},{"queue":"q","n":1},{"queue":"q","n":-4}]}"#);
        assert_eq!(p.field.as_deref(), Some("jobs[2].n"));
        assert!(
            p.detail
                .contains("expected an integer from 0 to 4294967295"),
            "{}",
            p.detail
        );
        let p = e(br#"{"jobs":[{"queue":"q","n":1},{"n":1}]}"#);
        assert_eq!(p.field.as_deref(), Some("jobs[1].queue"), "{}", p.detail);
        let p = e(br#""jobs""#);
        assert_eq!(p.field.as_deref(), Some("body"));
        assert!(p.detail.contains("expected an object"), "{}", p.detail);
        let p = e(br#"{"jobs":{}}"#);
        assert_eq!(p.field.as_deref(), Some("jobs"));
        assert!(p.detail.contains("expected an array"), "{}", p.detail);
        for p in [
            e(br#""jobs""#),
            e(br#"{"jobs":[{"queue":5,"n":1}]}"#),
            e(br#"{"jobs":[{"queue":"q","n":1.5}]}"#),
        ] {
            for rust in ["struct", "Batch", "i32", "u32", "sequence", "line "] {
                assert!(!p.detail.contains(rust), "{rust} in {}", p.detail);
            }
        }
    }
}
