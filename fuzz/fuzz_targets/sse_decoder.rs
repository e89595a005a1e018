//! Fuzzes the SSE decoder with arbitrary bytes fed in arbitrary splits: decoding must not depend
//! on the splits, and the raw bytes of the events plus the pending tail must be the input.
#![no_main]

use behavry_core::sse::{SseDecoder, SseError, SseEvent};
use libfuzzer_sys::fuzz_target;

/// Feeds `input` in pieces whose lengths come from `sizes` (cycled); 0 means "the rest".
fn decode(
    input: &[u8],
    sizes: &[u8],
    limit: usize,
) -> (Vec<SseEvent>, Result<(), SseError>, Vec<u8>) {
    let mut decoder = SseDecoder::new(limit);
    let mut events = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let size = match sizes.get(i % sizes.len().max(1)) {
            Some(&s) if s > 0 => usize::from(s).min(rest.len()),
            _ => rest.len(),
        };
        i += 1;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        match decoder.feed(chunk) {
            Ok(mut e) => events.append(&mut e),
            Err(err) => return (events, Err(err), decoder.pending().to_vec()),
        }
    }
    let end = decoder.finish().map(|last| events.extend(last));
    (events, end, decoder.pending().to_vec())
}

fuzz_target!(|data: &[u8]| {
    // First byte: how many split-size bytes follow; then the sizes; the rest is the stream.
    let Some((&n, data)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(data.len());
    let (sizes, input) = data.split_at(n);

    let whole = decode(input, &[], 1 << 20);
    let split = decode(input, sizes, 1 << 20);
    assert_eq!(whole, split);
    let (events, _, pending) = whole;
    let mut raw: Vec<u8> = events.iter().flat_map(|e| e.raw().to_vec()).collect();
    raw.extend_from_slice(&pending);
    assert_eq!(raw, input);

    // With a small limit, whether it fails must not depend on the splits either.
    let small_whole = decode(input, &[], 64);
    let small_split = decode(input, sizes, 64);
    assert_eq!(small_whole.1.is_err(), small_split.1.is_err());
});
