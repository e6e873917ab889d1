//! Reading a plan file as `terraform show -json` wrote it: UTF-8 (with or without a BOM) or
//! UTF-16 with a BOM (PowerShell's `>`), one JSON document and nothing else. Anything else is
//! refused with one line saying what the file is and what to do.

use std::fmt;

/// Why a file is not a plan mille can read. Its `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// Empty input.
    Empty,

    /// UTF-16 that does not decode (an odd length, or unpaired surrogates).
    BadUtf16(String),
    /// Not UTF-8 text.
    NotText,
    /// Text that is not JSON, with serde's reason and position.
    NotJson(String),
    /// The JSON ends early: a truncated file.
    Truncated,
    /// A JSON document with text around it, such as a CI wrapper's log lines.
    Wrapped(String),
    /// JSON, but not a plan (no `format_version`, or not an object).
    NotAPlan(String),
    /// A plan format this mille does not read.
    UnsupportedVersion(String),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::Empty => f.write_str("the plan is empty"),
            InputError::BadUtf16(why) => write!(f, "the plan is UTF-16 that does not decode ({why})"),
            InputError::NotText => f.write_str("the plan is not UTF-8 or UTF-16 text"),
            InputError::NotJson(why) => write!(f, "the plan is not JSON: {why}"),
            InputError::Truncated => f.write_str("the plan's JSON ends early: the file is truncated"),
            InputError::Wrapped(what) => write!(
                f,
                "the plan's JSON is surrounded by other output ({what}); pass what `terraform show -json` prints, without a wrapper's log (setup-terraform: terraform_wrapper: false)"
            ),
            InputError::NotAPlan(why) => write!(f, "not a Terraform plan: {why}"),
            InputError::UnsupportedVersion(v) => write!(
                f,
                "plan format_version {v:?} is not supported (mille reads 0.x and 1.x)"
            ),
        }
    }
}

impl std::error::Error for InputError {}

/// The file's bytes as UTF-8: a UTF-8 BOM removed, UTF-16 decoded. UTF-8 is not validated
/// here, but by the JSON parser as it reads each string (a pass over the whole file first
/// would hold all of it in memory at once; see `source`).
pub fn decode(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, InputError> {
    if bytes.is_empty() {
        return Err(InputError::Empty);
    }
    let utf16 = |le: bool, body: &[u8]| -> Result<String, InputError> {
        if !body.len().is_multiple_of(2) {
            return Err(InputError::BadUtf16("an odd number of bytes".into()));
        }
        let units = body.chunks_exact(2).map(|c| {
            if le {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map_err(|e| InputError::BadUtf16(e.to_string()))
    };
    use std::borrow::Cow;
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => Ok(Cow::Borrowed(rest)),
        [0xFF, 0xFE, rest @ ..] => utf16(true, rest).map(|s| Cow::Owned(s.into_bytes())),
        [0xFE, 0xFF, rest @ ..] => utf16(false, rest).map(|s| Cow::Owned(s.into_bytes())),
        _ => Ok(Cow::Borrowed(bytes)),
    }
}

/// Classifies a serde_json failure on the whole input.
pub fn classify(bytes: &[u8], e: &serde_json::Error) -> InputError {
    use serde_json::error::Category;
    let Ok(text) = std::str::from_utf8(bytes) else {
        return InputError::NotText;
    };
    let trimmed = text.trim_start();
    match e.classify() {
        Category::Eof => InputError::Truncated,
        Category::Syntax if !trimmed.starts_with('{') => match trimmed.find("\n{") {
            Some(_) => InputError::Wrapped(format!(
                "it starts with {:?}",
                trimmed
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(60)
                    .collect::<String>()
            )),
            None => InputError::NotJson(e.to_string()),
        },
        Category::Syntax if e.to_string().contains("trailing characters") => {
            InputError::Wrapped("text follows the JSON document".into())
        }
        Category::Data => InputError::NotAPlan(e.to_string()),
        _ => InputError::NotJson(e.to_string()),
    }
}
