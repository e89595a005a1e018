#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::checks::{base62, crc32};
use super::*;
use serde_json::json;

fn scanner() -> Scanner {
    Scanner::new(&DlpConfig::default()).unwrap()
}

/// (detector id, matched text) of every finding in `text`.
fn found(scanner: &Scanner, text: &str) -> Vec<(String, String)> {
    scanner
        .scan_text(text)
        .into_iter()
        .map(|f| {
            (
                scanner.detector(f.detector).unwrap().id.clone(),
                text[f.start..f.end].to_owned(),
            )
        })
        .collect()
}

fn github_token(prefix: &str, random: &str) -> String {
    let check = String::from_utf8(base62(crc32(random.as_bytes()), 6)).unwrap();
    format!("{prefix}{random}{check}")
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZ2VudC03IiwiaWF0IjoxNzAwMDAwMDAwfQ.c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMDEyMzQ1Njc4OQ";

#[test]
fn every_builtin_finds_its_positive_in_prose() {
    let s = scanner();
    let gh = github_token("ghp_", "bxTNJFoBinF5aJXVuLkSIc47WQAmL9");
    let anthropic = format!(
        "sk-ant-api03-{}AA",
        "Xy9_k-2Lm".repeat(11).get(..93).unwrap()
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "payment_card",
            "card 4526 0181 5908 3012 on file".into(),
            "4526 0181 5908 3012",
        ),
        (
            "payment_card",
            "amex 379960308246287.".into(),
            "379960308246287",
        ),
        ("us_ssn", "SSN: 219-09-9999".into(), "219-09-9999"),
        (
            "iban",
            "pay to DE89 3704 0044 0532 0130 00 now".into(),
            "DE89 3704 0044 0532 0130 00",
        ),
        (
            "iban",
            "FR1420041010050500013M02606".into(),
            "FR1420041010050500013M02606",
        ),
        (
            "email",
            "write to Jane.Doe+ops@corp.example.com.".into(),
            "Jane.Doe+ops@corp.example.com",
        ),
        (
            "phone",
            "call +44 20 7946 0958 today".into(),
            "+44 20 7946 0958",
        ),
        ("phone", "or (415) 555-2671".into(), "(415) 555-2671"),
        ("phone", "or 415-555-2671".into(), "415-555-2671"),
        ("ip_address", "db at 10.20.30.40:5432".into(), "10.20.30.40"),
        (
            "ip_address",
            "host fd12:3456:789a:1::1 inside".into(),
            "fd12:3456:789a:1::1",
        ),
        (
            "aws_access_key_id",
            "key AKIA2OGYBAH6TQLZXQ4M here".into(),
            "AKIA2OGYBAH6TQLZXQ4M",
        ),
        (
            "aws_secret_access_key",
            "aws_secret_access_key = Nq3vRk8PzW1xTy6Lb0Jm4Hc9Gd2Fs5Ea7Ui/Oo+P".into(),
            "Nq3vRk8PzW1xTy6Lb0Jm4Hc9Gd2Fs5Ea7Ui/Oo+P",
        ),
        ("github_token", format!("token {gh} leaked"), gh.as_str()),
        (
            "slack_token",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx".into(),
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        ),
        (
            "slack_webhook",
            "post to https://hooks.slack.com/services/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"
                .into(),
            "https://hooks.slack.com/services/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",
        ),
        (
            "stripe_key",
            "sk_live_51HxQ2eLkd93JfPqR8sTuVwXyZ0".into(),
            "sk_live_51HxQ2eLkd93JfPqR8sTuVwXyZ0",
        ),
        (
            "google_api_key",
            "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY".into(),
            "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
        ),
        (
            "openai_api_key",
            "OPENAI=sk-proj-Ab12Cd34Ef56Gh78Ij90T3BlbkFJKl12Mn34Op56Qr78St90".into(),
            "sk-proj-Ab12Cd34Ef56Gh78Ij90T3BlbkFJKl12Mn34Op56Qr78St90",
        ),
        (
            "anthropic_api_key",
            format!("key: {anthropic}"),
            anthropic.as_str(),
        ),
        ("jwt", format!("Authorization: Bearer {JWT}"), JWT),
        (
            "private_key",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\nafter".into(),
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
        ),
        (
            "database_url",
            "DATABASE_URL=postgres://app:S3cr3t-Pa55@db.internal:5432/prod".into(),
            "S3cr3t-Pa55",
        ),
        (
            "secret_assignment",
            "export API_KEY=9f8Kq2LmXz7Rt4Wv".into(),
            "9f8Kq2LmXz7Rt4Wv",
        ),
        (
            "secret_assignment",
            r#"{"client_secret": "Q7w!e9R#t2Y$u5I"}"#.into(),
            "Q7w!e9R#t2Y$u5I",
        ),
    ];
    for (id, text, expected) in &cases {
        let got = found(&s, text);
        assert_eq!(
            got,
            vec![(id.to_string(), expected.to_string())],
            "in {text:?}"
        );
    }
    let covered: std::collections::HashSet<&str> = cases.iter().map(|(id, _, _)| *id).collect();
    for builtin in Builtin::ALL {
        assert!(
            covered.contains(builtin.id()),
            "no positive case for {}",
            builtin.id()
        );
    }
}

#[test]
fn builtin_indices_follow_the_all_list() {
    for (i, builtin) in Builtin::ALL.iter().enumerate() {
        assert_eq!(builtin.index(), i);
    }
}

#[test]
fn names_that_merely_contain_an_excluded_word_are_still_secret() {
    let s = scanner();
    for (text, value) in [
        ("ADMIN_PASSWORD=Qx7!vR2#mK9$", "Qx7!vR2#mK9$"),
        ("MINIO_SECRET_KEY=Zq8Lk2vN5xP3", "Zq8Lk2vN5xP3"),
        ("NEXTAUTH_SECRET=Hj7kL9mN2pQ4", "Hj7kL9mN2pQ4"),
        ("SERVICE_ACCOUNT_TOKEN=Wd3Fr5Gt7Hy9", "Wd3Fr5Gt7Hy9"),
    ] {
        assert_eq!(
            found(&s, text),
            vec![("secret_assignment".into(), value.into())],
            "{text}"
        );
    }
    // Whole words still exclude: a page token, a token count.
    assert_eq!(found(&s, "nextPageToken=CiAKGjBpNDd2Nmp2"), vec![]);
    assert_eq!(found(&s, "max_token_count=Zq8Lk2vN5xP3"), vec![]);
}

#[test]
fn addresses_after_a_colon_and_driver_schemes_are_found() {
    let s = scanner();
    assert_eq!(
        found(&s, "To:jane.doe@corp.example.com"),
        vec![("email".into(), "jane.doe@corp.example.com".into())]
    );
    assert_eq!(
        found(&s, "url=postgresql+psycopg2://app:Vq8Lm3Zx7Rt@db/prod"),
        vec![("database_url".into(), "Vq8Lm3Zx7Rt".into())]
    );
}

#[test]
fn repeated_prefixes_and_unterminated_keys_end_in_one_finding() {
    // Inputs that cost quadratic time when every prefix scans to the end of the string. Tests do
    // not time anything: this checks the result (one finding covering the unterminated blocks)
    // and that the scan ends; how long it takes is for the benches.
    let s = scanner();
    let pem = "-----BEGIN RSA PRIVATE KEY-----\n".repeat(2000);
    let found = s.scan_text(&pem);
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].start, found[0].end), (0, pem.len()));
    for text in [
        "sk-".repeat(5_000),
        "1:".repeat(5_000),
        "pwd=".repeat(5_000),
    ] {
        let _ = s.scan_text(&text);
    }
}

#[test]
fn hard_negatives_are_not_findings() {
    let s = scanner();
    let gh_doc = "gho_16C7e42F292c6912E7710c838347Ae178B4a";
    for text in [
        "id 123e4567-e89b-12d3-a456-426614174000",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "test card 4111 1111 1111 1111 and 4242424242424242",
        "order 4526018159083013 (checksum off)",
        "version 1.2.3 and 10.0.19041.1",
        "release 2024-01-15 at 12:30:45",
        "public 8.8.8.8 and loopback 127.0.0.1",
        "AWS docs key AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        gh_doc,
        "xoxb-your-token-here",
        "password: ${DB_PASSWORD}",
        "password=changeme",
        "max_tokens=4096",
        "next_page_token: CiAKGjBpNDd2Nmp2Zml2cXRjeWs",
        "postgres://user:password@localhost/db",
        "postgres://localhost:5432/db",
        "icon@2x.png and @modelcontextprotocol/sdk and pkg@1.2.3",
        "SSN 078-05-1120 and 123-45-6789",
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk",
        "sk-not-a-real-key",
        "+1",
        "BEGIN PUBLIC KEY",
    ] {
        assert_eq!(found(&s, text), vec![], "in {text:?}");
    }
}

#[test]
fn a_more_specific_detector_wins_an_overlap() {
    let s = scanner();
    let gh = github_token("ghs_", "Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz2");
    let text = format!("GITHUB_TOKEN={gh}");
    assert_eq!(found(&s, &text), vec![("github_token".into(), gh)]);
}

#[test]
fn overlapping_findings_merge_so_redaction_leaves_nothing_behind() {
    let s = scanner();
    let jwt_in_token = format!("access_token={JWT}&x=1");
    assert_eq!(
        found(&s, &jwt_in_token),
        vec![("jwt".into(), JWT.to_owned())]
    );
    // A URL's password is the token itself.
    let gh = github_token("ghs_", "Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz2");
    let text = format!("https://x-access-token:{gh}@github.com/acme/app.git");
    assert_eq!(found(&s, &text), vec![("github_token".into(), gh.clone())]);
    // The secret value runs past the GitHub token: the merged span covers both, named by the
    // specific detector.
    let text = format!("password={gh}-and-more");
    assert_eq!(
        found(&s, &text),
        vec![("github_token".into(), format!("{gh}-and-more"))]
    );
}

#[test]
fn disabled_detectors_and_private_ranges_are_configurable() {
    let config: DlpConfig = serde_json::from_value(json!({
        "disabled": ["email"],
        "privateRanges": ["0.0.0.0/0"]
    }))
    .unwrap();
    let s = Scanner::new(&config).unwrap();
    assert_eq!(
        found(&s, "a@b.example.com from 8.8.8.8"),
        vec![("ip_address".into(), "8.8.8.8".into())]
    );
}

#[test]
fn custom_detectors_run_where_their_keywords_are() {
    let config: DlpConfig = serde_json::from_value(json!({
        "custom": [{"id": "employee_id", "pattern": "EMP-[0-9]{6}", "keywords": ["employee"], "severity": "high"}]
    }))
    .unwrap();
    let s = Scanner::new(&config).unwrap();
    assert_eq!(
        found(&s, "Employee EMP-123456 left"),
        vec![("employee_id".into(), "EMP-123456".into())]
    );
    assert_eq!(found(&s, "ticket EMP-123456"), vec![]);
    let info = s
        .detectors()
        .iter()
        .find(|d| d.id == "employee_id")
        .unwrap();
    assert_eq!(info.severity, Severity::High);
}

#[test]
fn bad_configs_are_refused_with_the_field() {
    let bad = |v: serde_json::Value| {
        let config: DlpConfig = serde_json::from_value(v).unwrap();
        Scanner::new(&config).unwrap_err().to_string()
    };
    assert!(bad(json!({"disabled": ["nope"]})).contains("dlp.disabled"));
    assert!(bad(json!({"privateRanges": ["10.0.0.0"]})).contains("dlp.privateRanges"));
    assert!(bad(json!({"privateRanges": ["10.0.0.0/33"]})).contains("dlp.privateRanges"));
    assert!(bad(json!({"custom": [{"id": "email", "pattern": "x"}]})).contains("already taken"));
    assert!(bad(json!({"custom": [{"id": "a b", "pattern": "x"}]})).contains("letters"));
    assert!(bad(json!({"custom": [{"id": "x", "pattern": "("}]})).contains("pattern refused"));
    assert!(bad(json!({"custom": [{"id": "x", "pattern": "a*"}]})).contains("empty string"));
    assert!(serde_json::from_value::<DlpConfig>(json!({"disable": []})).is_err());
}

#[test]
fn json_findings_have_pointers_and_decoded_escapes() {
    let s = scanner();
    // The card written with JSON escapes for two of its digits, under a key that needs RFC 6901
    // escaping.
    let doc: serde_json::Value = serde_json::from_str(
        r#"{"content":[{"type":"text","text":"ok"},{"type":"text","text":"card \u0034526 0181 5908 3012"}],
            "a/b~c":{"password":"Zx9!Lq2#Mv8$"},"n":[1,true,null]}"#,
    )
    .unwrap();
    let findings = scan_json(&s, &doc);
    let summary: Vec<(String, String)> = findings
        .iter()
        .map(|f| {
            (
                f.pointer.clone(),
                s.detector(f.detector).unwrap().id.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "/a~1b~0c/password".to_owned(),
                "secret_assignment".to_owned()
            ),
            ("/content/1/text".to_owned(), "payment_card".to_owned()),
        ]
    );
    let mut redacted = doc.clone();
    assert_eq!(redact_json(&s, &mut redacted, &findings), 2);
    assert_eq!(
        redacted["content"][1]["text"],
        "card [REDACTED:payment_card]"
    );
    assert_eq!(
        redacted["a/b~c"]["password"],
        "[REDACTED:secret_assignment]"
    );
    assert_eq!(redacted["content"][0], doc["content"][0]);
}

#[test]
fn redaction_of_several_spans_in_one_string_keeps_the_rest() {
    let s = scanner();
    let doc = json!({"text": "a@corp.example.com, b@corp.example.com; ssn 219-09-9999."});
    let findings = scan_json(&s, &doc);
    let mut redacted = doc.clone();
    assert_eq!(redact_json(&s, &mut redacted, &findings), 3);
    assert_eq!(
        redacted["text"],
        "[REDACTED:email], [REDACTED:email]; ssn [REDACTED:us_ssn]."
    );
}

#[test]
fn keyed_hashes_are_stable_normalised_and_key_dependent() {
    let s = scanner();
    let card = s
        .detectors()
        .iter()
        .find(|d| d.id == "payment_card")
        .unwrap();
    let k1 = FindingKey::new(&[1; 32]);
    let k2 = FindingKey::new(&[2; 32]);
    let a = k1.hash(card, "4526 0181 5908 3012");
    assert!(a.starts_with("hmac-sha256:") && a.len() == 12 + 32, "{a}");
    assert_eq!(a, k1.hash(card, "4526-0181-5908-3012"));
    assert_ne!(a, k2.hash(card, "4526 0181 5908 3012"));
    assert!(!a.contains("4526"));
}

#[test]
fn non_ascii_text_around_findings_keeps_char_boundaries() {
    let s = scanner();
    let text = "Zählerstand — E-Mail: jürgen@example.com, Tel. +49 30 1234567 ✓";
    let got = found(&s, text);
    assert_eq!(
        got,
        vec![
            ("email".into(), "jürgen@example.com".into()),
            ("phone".into(), "+49 30 1234567".into())
        ]
    );
}

proptest::proptest! {
    #[test]
    fn scanning_arbitrary_text_never_panics_and_spans_are_boundaries(text in "\\PC{0,200}") {
        let s = scanner();
        for f in s.scan_text(&text) {
            proptest::prop_assert!(text.get(f.start..f.end).is_some());
        }
    }

    #[test]
    fn scanning_digit_heavy_text_never_panics(text in "[0-9 .:+()-]{0,120}") {
        let s = scanner();
        for f in s.scan_text(&text) {
            proptest::prop_assert!(f.start < f.end && f.end <= text.len());
        }
    }
}
