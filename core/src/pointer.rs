//! JSON Pointer (RFC 6901) building, shared by the scanners and the pin diff.

/// Appends `/segment` to `pointer`, escaped as RFC 6901 §3 says: `~` is written `~0` and `/` is
/// written `~1`.
pub fn push_segment(pointer: &mut String, segment: &str) {
    pointer.push('/');
    for c in segment.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_and_slash_are_escaped() {
        let mut pointer = String::new();
        push_segment(&mut pointer, "a/b~c");
        push_segment(&mut pointer, "");
        assert_eq!(pointer, "/a~1b~0c/");
    }
}
