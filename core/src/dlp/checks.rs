//! Validators behind the detectors: checksums and shapes a match must pass before it counts.
//!
//! Each one is a pure function over ASCII bytes, so a detector can run it on a candidate span
//! without allocating.

/// Luhn (ISO/IEC 7812-1 annex B) over the digits of `digits`, separators skipped.
pub(crate) fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    let mut count = 0usize;
    for &b in digits.iter().rev() {
        if !b.is_ascii_digit() {
            continue;
        }
        let mut d = u32::from(b - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
        count += 1;
    }
    count > 0 && sum.is_multiple_of(10)
}

/// Whether a card number's leading digits belong to a scheme that issues cards of its length
/// (issuer identification ranges of Visa, Mastercard, American Express, Discover, JCB, Diners
/// Club and UnionPay). Numbers outside them are not cards, whatever their checksum.
pub(crate) fn card_issuer_known(digits: &[u8]) -> bool {
    let len = digits.len();
    let prefix = |n: usize| -> u32 {
        digits
            .iter()
            .take(n)
            .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'))
    };
    match digits.first() {
        Some(b'4') => matches!(len, 13 | 16 | 19),
        Some(b'5') => (51..=55).contains(&prefix(2)) && len == 16,
        Some(b'2') => (2221..=2720).contains(&prefix(4)) && len == 16,
        Some(b'3') => {
            let two = prefix(2);
            let four = prefix(4);
            ((two == 34 || two == 37) && len == 15)
                || ((3528..=3589).contains(&four) && (16..=19).contains(&len))
                || (((300..=305).contains(&prefix(3)) || two == 36 || two == 38 || two == 39)
                    && (14..=19).contains(&len))
        }
        Some(b'6') => {
            let two = prefix(2);
            (prefix(4) == 6011 || two == 65 || (644..=649).contains(&prefix(3)) || two == 62)
                && (16..=19).contains(&len)
        }
        _ => false,
    }
}

/// Card numbers the card schemes and payment processors publish for testing. They pass every
/// check a real number passes, appear all over documentation and fixtures, and are not anyone's
/// card, so they are not findings.
const TEST_CARD_NUMBERS: &[&[u8]] = &[
    b"4111111111111111",
    b"4242424242424242",
    b"4012888888881881",
    b"4222222222222",
    b"4000056655665556",
    b"4000000000000002",
    b"4000000000000077",
    b"4000000000000093",
    b"4000000000009995",
    b"4000002500003155",
    b"4000000000003220",
    b"4000000000000010",
    b"5555555555554444",
    b"5105105105105100",
    b"5200828282828210",
    b"5425233430109903",
    b"2223003122003222",
    b"2222400010000008",
    b"378282246310005",
    b"371449635398431",
    b"378734493671000",
    b"6011111111111117",
    b"6011000990139424",
    b"6011000400000000",
    b"3056930009020004",
    b"30569309025904",
    b"38520000023237",
    b"36227206271667",
    b"3566002020360505",
    b"3530111333300000",
    b"6200000000000005",
];

pub(crate) fn is_test_card(digits: &[u8]) -> bool {
    TEST_CARD_NUMBERS.contains(&digits)
}

/// US Social Security Number validity (SSA: area 001–899 except 666, group 01–99, serial
/// 0001–9999), minus the numbers published as examples (078-05-1120 from the 1938 wallet
/// insert, 123-45-6789 from advertisements), which are never anyone's.
pub(crate) fn ssn_valid(area: u32, group: u32, serial: u32) -> bool {
    let example =
        (area, group, serial) == (78, 5, 1120) || (area, group, serial) == (123, 45, 6789);
    (1..900).contains(&area) && area != 666 && group != 0 && serial != 0 && !example
}

/// IBAN length per country (SWIFT IBAN registry). A country code not in it is not an IBAN.
pub(crate) fn iban_length(country: [u8; 2]) -> Option<usize> {
    let len = match &country {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" | b"VA" => 22,
        b"AE" | b"GI" | b"IL" | b"IQ" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"PL" | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        _ => return None,
    };
    Some(len)
}

/// ISO 13616-1 check: the IBAN (spaces removed, `compact`) moved four characters left, letters
/// as 10–35, is 1 modulo 97. Computed digit by digit, so no big integers.
pub(crate) fn iban_mod97_valid(compact: &[u8]) -> bool {
    if compact.len() < 5 {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem = 0u32;
    for &b in tail.iter().chain(head) {
        match b {
            b'0'..=b'9' => rem = (rem * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => rem = (rem * 100 + u32::from(b - b'A') + 10) % 97,
            _ => return false,
        }
    }
    rem == 1
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as GitHub uses for the checksum of its
/// token formats.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `value` in base 62 (digits, upper case, lower case), left-padded with `0` to `width`.
pub(crate) fn base62(mut value: u32, width: usize) -> Vec<u8> {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = BASE62.get((value % 62) as usize).copied().unwrap_or(b'0');
        value /= 62;
    }
    out
}

/// GitHub's classic token checksum (github.blog, 2021-04-05, "Behind GitHub's new
/// authentication token formats"): after the `gh?_` prefix come 30 random base62 characters and
/// the CRC-32 of those 30 in 6 base62 characters. Made-up and documentation tokens fail it.
pub(crate) fn github_checksum_valid(body: &[u8]) -> bool {
    let Some((random, check)) = body.split_at_checked(30) else {
        return false;
    };
    check.len() == 6 && base62(crc32(random), 6) == check
}

/// Shannon entropy of `bytes` in bits per byte.
pub(crate) fn entropy_bits(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c += 1;
        }
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Values that stand in for a secret in documentation and templates: an assignment of one is
/// not a leak.
pub(crate) fn is_placeholder(value: &[u8]) -> bool {
    let lower = value.to_ascii_lowercase();
    let starts = |p: &[u8]| lower.starts_with(p);
    // Compared only where the first byte matches: `windows(..).any(|w| w == p)` calls memcmp
    // at every offset, for every word.
    let contains = |p: &[u8]| {
        let first = p.first().copied();
        lower
            .windows(p.len())
            .any(|w| w.first().copied() == first && w == p)
    };
    if starts(b"${") || starts(b"{{") || starts(b"<") || starts(b"$(") || starts(b"%(") {
        return true;
    }
    if starts(b"$")
        && value
            .iter()
            .skip(1)
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return true;
    }
    if let Some(&first) = lower.first()
        && lower.iter().all(|&b| b == first)
    {
        return true;
    }
    const WORDS: &[&[u8]] = &[
        b"example",
        b"changeme",
        b"change_me",
        b"placeholder",
        b"your_",
        b"your-",
        b"yourpass",
        b"redacted",
        b"xxxx",
        b"****",
        b"...",
        b"dummy",
        b"sample",
        b"notasecret",
        b"not-a-secret",
    ];
    if WORDS.iter().any(|w| contains(w)) {
        return true;
    }
    const WHOLE: &[&[u8]] = &[
        b"password",
        b"passwd",
        b"pass",
        b"secret",
        b"pwd",
        b"token",
        b"test",
        b"admin",
        b"root",
        b"null",
        b"none",
        b"true",
        b"false",
        b"undefined",
        b"string",
    ];
    WHOLE.contains(&lower.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_valid_and_refuses_one_digit_off() {
        assert!(luhn_valid(b"4539 1488 0343 6467"));
        assert!(!luhn_valid(b"4539 1488 0343 6468"));
        assert!(!luhn_valid(b""));
    }

    #[test]
    fn issuer_ranges_match_lengths() {
        assert!(card_issuer_known(b"4539148803436467"));
        assert!(card_issuer_known(b"371449635398431"));
        assert!(!card_issuer_known(b"3714496353984310"), "amex is 15 digits");
        assert!(card_issuer_known(b"2221000000000009"));
        assert!(!card_issuer_known(
            b"2720990000000007".get(..15).unwrap_or_default()
        ));
        assert!(!card_issuer_known(b"9999999999999995"));
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn_valid(219, 9, 9999));
        assert!(!ssn_valid(0, 12, 3456));
        assert!(!ssn_valid(666, 12, 3456));
        assert!(!ssn_valid(900, 12, 3456));
        assert!(!ssn_valid(219, 0, 3456));
        assert!(!ssn_valid(219, 12, 0));
        assert!(!ssn_valid(78, 5, 1120));
    }

    #[test]
    fn iban_check_digits() {
        assert!(iban_mod97_valid(b"GB82WEST12345698765432"));
        assert!(iban_mod97_valid(b"DE89370400440532013000"));
        assert!(!iban_mod97_valid(b"DE89370400440532013001"));
        assert_eq!(iban_length(*b"DE"), Some(22));
        assert_eq!(iban_length(*b"ZZ"), None);
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The CRC-32/ISO-HDLC check value of "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(base62(0, 6), b"000000");
        assert_eq!(base62(61, 2), b"0z");
    }

    #[test]
    fn github_checksum() {
        let random = b"abcdefghijklmnopqrstuvwxyz0123";
        let mut body = random.to_vec();
        body.extend(base62(crc32(random), 6));
        assert!(github_checksum_valid(&body));
        body[0] = b'b';
        assert!(!github_checksum_valid(&body));
        assert!(!github_checksum_valid(
            b"16C7e42F292c6912E7710c838347Ae178B4a"
        ));
    }

    #[test]
    fn entropy_and_placeholders() {
        assert!(entropy_bits(b"aaaaaaaa") < 0.01);
        assert!(entropy_bits(b"Zq8#Lk2$vN5!") > 3.4);
        for p in [
            &b"${DB_PASSWORD}"[..],
            b"<your-token>",
            b"********",
            b"changeme",
            b"$TOKEN",
        ] {
            assert!(is_placeholder(p), "{}", String::from_utf8_lossy(p));
        }
        assert!(!is_placeholder(b"Zq8#Lk2$vN5!"));
    }
}
