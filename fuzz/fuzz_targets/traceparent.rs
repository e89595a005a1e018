//! Fuzzes `traceparent` parsing: never panics, and an accepted value formats back to a value
//! that parses to the same trace.
#![no_main]

use behavry_core::trace::TraceParent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = TraceParent::parse(text) {
        let formatted = parsed.to_string();
        assert_eq!(TraceParent::parse(&formatted).as_ref(), Ok(&parsed));
        if text.starts_with("00-") {
            assert_eq!(formatted, text);
        }
    }
});
