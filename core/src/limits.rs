//! Size and depth limits applied to untrusted input before it is parsed.
//!
//! The depth check scans raw bytes, so a body such as `[[[[...]]]]` nested a million deep is
//! refused in one linear pass and never reaches serde's recursive descent (serde_json stops at 128
//! levels on its own, but each level still costs stack on the way down, and the wasm stack is
//! small).

/// Default largest accepted JSON-RPC body: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default deepest accepted JSON nesting (objects and arrays): 64 levels.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;
/// Default largest accepted single SSE event, terminating blank line included: 1 MiB.
pub const DEFAULT_MAX_SSE_EVENT_BYTES: usize = 1024 * 1024;
/// Deepest nesting a limit may allow: serde_json refuses more than 128 levels by itself, and
/// the limit must be the one that decides, so the error names it.
pub const MAX_SUPPORTED_JSON_DEPTH: usize = 127;

/// Limits on untrusted MCP input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted, in bytes. Default [`DEFAULT_MAX_BODY_BYTES`] (1 MiB).
    pub max_body_bytes: usize,
    /// Deepest JSON nesting accepted; `{}` and `[]` are depth 1, a scalar is depth 0.
    /// Default [`DEFAULT_MAX_JSON_DEPTH`] (64); at most [`MAX_SUPPORTED_JSON_DEPTH`].
    pub max_json_depth: usize,
    /// Largest single SSE event accepted, in bytes. Default [`DEFAULT_MAX_SSE_EVENT_BYTES`] (1 MiB).
    pub max_sse_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
            max_sse_event_bytes: DEFAULT_MAX_SSE_EVENT_BYTES,
        }
    }
}

/// A limit that cannot be used, found when the configuration is loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsConfigError {
    /// A limit of zero would refuse all input.
    #[error("limit `{field}` must be greater than 0")]
    Zero {
        /// The limit's config name (camelCase).
        field: &'static str,
    },
    /// The depth limit is above what the JSON parser supports.
    #[error(
        "limit `maxJsonDepth` is {value}, above the supported maximum {MAX_SUPPORTED_JSON_DEPTH}"
    )]
    DepthTooLarge {
        /// The configured value.
        value: usize,
    },
}

impl Limits {
    /// Checks that every limit is usable. Call once when the configuration is loaded.
    pub fn validate(&self) -> Result<(), LimitsConfigError> {
        if self.max_body_bytes == 0 {
            return Err(LimitsConfigError::Zero {
                field: "maxBodyBytes",
            });
        }
        if self.max_json_depth == 0 {
            return Err(LimitsConfigError::Zero {
                field: "maxJsonDepth",
            });
        }
        if self.max_sse_event_bytes == 0 {
            return Err(LimitsConfigError::Zero {
                field: "maxSseEventBytes",
            });
        }
        if self.max_json_depth > MAX_SUPPORTED_JSON_DEPTH {
            return Err(LimitsConfigError::DepthTooLarge {
                value: self.max_json_depth,
            });
        }
        Ok(())
    }
}

/// Input that breaks a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The body is larger than `maxBodyBytes`.
    #[error("body of {size} bytes exceeds the limit maxBodyBytes={limit}")]
    BodyTooLarge {
        /// Size seen (at least; a streamed body may be longer).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// JSON nested deeper than `maxJsonDepth`.
    #[error("JSON nesting exceeds the limit maxJsonDepth={limit}")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
}

/// Refuses a body longer than `limits.max_body_bytes`.
pub fn check_body_size(size: usize, limits: &Limits) -> Result<(), LimitError> {
    if size > limits.max_body_bytes {
        return Err(LimitError::BodyTooLarge {
            size,
            limit: limits.max_body_bytes,
        });
    }
    Ok(())
}

/// Refuses JSON text whose objects/arrays nest deeper than `max_depth`.
///
/// Brackets inside strings do not count: the scan tracks string state and backslash escapes
/// (RFC 8259 §7), so `"[[["` is depth 0. It does not validate the JSON; serde does that after.
pub fn check_json_depth(bytes: &[u8], max_depth: usize) -> Result<(), LimitError> {
    let mut depth: usize = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(LimitError::TooDeep { limit: max_depth });
                }
            }
            // Unbalanced closers are a syntax error that serde reports; do not underflow here.
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values_and_valid() {
        let l = Limits::default();
        assert_eq!(l.max_body_bytes, 1 << 20);
        assert_eq!(l.max_json_depth, 64);
        assert_eq!(l.max_sse_event_bytes, 1 << 20);
        assert_eq!(l.validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_field() {
        let bad = Limits {
            max_sse_event_bytes: 0,
            ..Limits::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("maxSseEventBytes")
        );
        let bad = Limits {
            max_json_depth: 500,
            ..Limits::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("maxJsonDepth")
        );
    }

    #[test]
    fn body_size_boundary() {
        let l = Limits {
            max_body_bytes: 10,
            ..Limits::default()
        };
        assert_eq!(check_body_size(10, &l), Ok(()));
        let err = check_body_size(11, &l).unwrap_err();
        assert_eq!(
            err,
            LimitError::BodyTooLarge {
                size: 11,
                limit: 10
            }
        );
        assert!(err.to_string().contains("maxBodyBytes=10"));
    }

    #[test]
    fn depth_boundary() {
        assert_eq!(check_json_depth(b"[[1]]", 2), Ok(()));
        assert_eq!(
            check_json_depth(b"[[[1]]]", 2),
            Err(LimitError::TooDeep { limit: 2 })
        );
        assert_eq!(check_json_depth(br#"{"a":{"b":[]}}"#, 3), Ok(()));
        assert!(check_json_depth(br#"{"a":{"b":[{}]}}"#, 3).is_err());
        assert_eq!(check_json_depth(b"17", 0), Ok(()));
    }

    #[test]
    fn brackets_in_strings_do_not_count() {
        assert_eq!(check_json_depth(br#"["[[[[[[", "{{{{"]"#, 1), Ok(()));
        // An escaped quote does not end the string; an escaped backslash does not escape the quote.
        assert_eq!(check_json_depth(br#"["\"[[[[", "\\", "]]"]"#, 1), Ok(()));
        assert!(check_json_depth(br#"["\\", [[]]]"#, 2).is_err());
    }

    #[test]
    fn huge_nesting_is_refused_without_recursion() {
        let body = "[".repeat(1_000_000);
        assert_eq!(
            check_json_depth(body.as_bytes(), 64),
            Err(LimitError::TooDeep { limit: 64 })
        );
    }

    #[test]
    fn sequential_siblings_do_not_accumulate() {
        let body = "[".to_owned() + &"[],".repeat(1000) + "[]]";
        assert_eq!(check_json_depth(body.as_bytes(), 2), Ok(()));
    }
}
