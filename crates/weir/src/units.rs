//! Durations and sizes as people type them on a command line (`weir_core::units`), with the
//! command line's failure type.

use crate::out::Failure;

/// `500ms`, `30s`, `15m`, `24h`, `7d`, or plain ms.
pub fn parse_duration_ms(s: &str) -> Result<u64, Failure> {
    weir_core::units::parse_duration_ms(s).map_err(Failure::Usage)
}

/// `500MiB`, `2GiB`, `2GB`, or bytes.
pub fn parse_size(s: &str) -> Result<u64, Failure> {
    weir_core::units::parse_size(s).map_err(Failure::Usage)
}
