#!/usr/bin/env python3
"""Writes tests/corpus/dlp.jsonl: labelled cases for `behavry scan` (precision and recall per
DLP detector).

Every value is synthetic, made here with a fixed seed: random digits completed with the real check
digit (Luhn, ISO 13616 mod-97, GitHub's CRC-32), random key bodies in each vendor's documented
shape. The hard negatives are the look-alikes that trip naive detectors: UUIDs, hashes, the card
numbers card schemes publish for testing, AWS's documentation keys, version strings, dates, base64
images, placeholders. Run it again after changing it (`python3 tests/corpus/generate_dlp.py`);
the output is committed so the corpus is reviewable.
"""
import base64
import json
import random
import string
import zlib
from pathlib import Path

rng = random.Random(20261201)
B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits


def rand(alphabet, n):
    return "".join(rng.choice(alphabet) for _ in range(n))


def luhn_complete(prefix, length):
    digits = [int(c) for c in prefix] + [rng.randint(0, 9) for _ in range(length - 1 - len(prefix))]
    for check in range(10):
        total = 0
        for i, d in enumerate(reversed(digits + [check])):
            if i % 2 == 1:
                d *= 2
                d = d - 9 if d > 9 else d
            total += d
        if total % 10 == 0:
            return "".join(map(str, digits + [check]))
    raise AssertionError


def luhn_broken(prefix, length):
    good = luhn_complete(prefix, length)
    return good[:-1] + str((int(good[-1]) + 1) % 10)


def group(number, sizes, sep):
    out, i = [], 0
    for size in sizes:
        out.append(number[i : i + size])
        i += size
    if i < len(number):
        out.append(number[i:])
    return sep.join(out)


def card():
    kind = rng.choice(["visa", "mc", "mc2", "amex", "discover", "jcb", "unionpay"])
    if kind == "amex":
        n = luhn_complete(rng.choice(["34", "37"]), 15)
        return rng.choice([n, group(n, [4, 6, 5], " "), group(n, [4, 6, 5], "-")])
    prefix = {"visa": "4", "mc": str(rng.randint(51, 55)), "mc2": str(rng.randint(2221, 2720)),
              "discover": "6011", "jcb": str(rng.randint(3528, 3589)), "unionpay": "62"}[kind]
    n = luhn_complete(prefix, 16)
    return rng.choice([n, group(n, [4, 4, 4, 4], " "), group(n, [4, 4, 4, 4], "-")])


def ssn():
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


IBAN_SHAPES = {"DE": (18, string.digits), "GB": (18, None), "FR": (23, None), "NL": (14, None),
               "ES": (20, string.digits), "IT": (23, None), "CH": (17, string.digits),
               "BE": (12, string.digits), "PL": (24, string.digits), "SE": (20, string.digits)}


def iban():
    cc = rng.choice(list(IBAN_SHAPES))
    n, alphabet = IBAN_SHAPES[cc]
    if cc == "GB":
        bban = rand(string.ascii_uppercase, 4) + rand(string.digits, 14)
    elif cc == "NL":
        bban = rand(string.ascii_uppercase, 4) + rand(string.digits, 10)
    elif cc in ("FR", "IT"):
        bban = rand(string.digits, n - 1) + rng.choice(string.digits)
        if cc == "IT":
            bban = rng.choice(string.ascii_uppercase) + rand(string.digits, n - 1)
    else:
        bban = rand(alphabet, n)
    numeric = int("".join(str(int(c, 36)) for c in bban + cc + "00"))
    full = f"{cc}{98 - numeric % 97:02d}{bban}"
    return rng.choice([full, " ".join(full[i : i + 4] for i in range(0, len(full), 4))])


FIRST = ["jane", "omar", "li", "sofia", "raj", "mette", "kwame", "ana", "yuki", "pierre"]
LAST = ["doe", "haddad", "wei", "rossi", "patel", "hansen", "mensah", "silva", "tanaka", "martin"]
DOMAINS = ["corp.example.com", "mail.acme.io", "example.org", "uni-hamburg.de", "gov.uk", "fastmail.fm"]


def email():
    first, last = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice([f"{first}.{last}", f"{first}{rng.randint(1, 99)}", f"{first[0]}{last}", f"{first}+ops"])
    return f"{local}@{rng.choice(DOMAINS)}"


def phone():
    style = rng.randint(0, 4)
    a, b, c = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    if style == 0:
        return f"+1 {a} {b} {c:04d}"
    if style == 1:
        return f"({a}) {b}-{c:04d}"
    if style == 2:
        return f"{a}-{b}-{c:04d}"
    if style == 3:
        return f"+44 20 {rng.randint(7000, 8999)} {rng.randint(0, 9999):04d}"
    return f"+49 30 {rng.randint(1000000, 9999999)}"


def private_ip():
    return rng.choice([
        f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        f"fd{rand('0123456789abcdef', 2)}:{rand('0123456789abcdef', 4)}:{rand('0123456789abcdef', 4)}::{rng.randint(1, 99)}",
    ])


def aws_key_id():
    return rng.choice(["AKIA", "ASIA"]) + rand(UPPER_DIGITS, 16)


def aws_secret():
    return rand(ALNUM + "/+", 40)


def github():
    prefix = rng.choice(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"])
    body = rand(B62, 30)
    crc = zlib.crc32(body.encode())
    check = ""
    for _ in range(6):
        check = B62[crc % 62] + check
        crc //= 62
    return prefix + body + check


def github_pat():
    return "github_pat_" + rand(ALNUM, 22) + "_" + rand(ALNUM, 59)


def slack_token():
    kind = rng.choice(["xoxb", "xoxp"])
    if kind == "xoxb":
        return f"xoxb-{rand(string.digits, 12)}-{rand(string.digits, 13)}-{rand(ALNUM, 24)}"
    return f"xoxp-{rand(string.digits, 12)}-{rand(string.digits, 12)}-{rand(string.digits, 13)}-{rand('0123456789abcdef', 32)}"


def slack_webhook():
    return f"https://hooks.slack.com/services/T{rand(UPPER_DIGITS, 8)}/B{rand(UPPER_DIGITS, 10)}/{rand(ALNUM, 24)}"


def stripe():
    return rng.choice(["sk_live_", "rk_live_", "sk_test_"]) + rand(ALNUM, rng.choice([24, 32, 99]))


def google():
    return "AIza" + rand(ALNUM + "-_", 35)


def openai():
    return rng.choice(["sk-", "sk-proj-", "sk-svcacct-"]) + rand(ALNUM, 20) + "T3BlbkFJ" + rand(ALNUM, 20)


def anthropic():
    return "sk-ant-api03-" + rand(ALNUM + "-_", 93) + "AA"


def b64url(obj):
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()


def jwt():
    header = b64url({"alg": rng.choice(["RS256", "HS256", "ES256"]), "typ": "JWT", "kid": rand(ALNUM, 8)})
    payload = b64url({"sub": f"agent-{rng.randint(1, 999)}", "iat": rng.randint(1.7e9, 1.8e9), "scope": "mcp"})
    return f"{header}.{payload}.{rand(ALNUM + '-_', 43)}"


def pem():
    label = rng.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"])
    body = "\n".join(rand(ALNUM + "+/", 64) for _ in range(rng.randint(2, 6)))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"


def db_url():
    scheme = rng.choice(["postgres", "postgresql", "mysql", "mongodb+srv", "redis", "amqps"])
    return f"{scheme}://{rng.choice(['app', 'svc_reader', 'admin'])}:{rand(ALNUM + '-_', rng.randint(10, 24))}@{rng.choice(['db.internal', 'cluster0.x1y2.mongodb.net', 'cache:6379'])}/{rng.choice(['prod', 'orders', '0'])}"


def password():
    return rand(ALNUM + "!#%*-_", rng.randint(10, 24))


# Contexts a value shows up in: prose, a log line, an env file, JSON inside a text result, YAML.
def in_context(value, name="value"):
    return rng.choice([
        f"Here is the {name}: {value}",
        f"2026-11-30T10:22:01Z INFO request handled {name}={value} status=200",
        f'{{"{name}": "{value}", "ok": true}}',
        f"{name}:\n  current: {value}\n",
        f"Customer record\n{name.title()}: {value}\nNotes: none",
        f"| {name} | {value} |",
    ])


POSITIVES = [
    ("payment_card", card, "card number"),
    ("us_ssn", ssn, "ssn"),
    ("iban", iban, "iban"),
    ("email", email, "contact"),
    ("phone", phone, "phone"),
    ("ip_address", private_ip, "host"),
    ("aws_access_key_id", aws_key_id, "access key id"),
    ("github_token", github, "github"),
    ("github_token", github_pat, "github"),
    ("slack_token", slack_token, "slack"),
    ("slack_webhook", slack_webhook, "webhook"),
    ("stripe_key", stripe, "stripe"),
    ("google_api_key", google, "maps"),
    ("openai_api_key", openai, "openai"),
    ("anthropic_api_key", anthropic, "anthropic"),
    ("jwt", jwt, "session"),
    ("private_key", pem, "key"),
    ("database_url", db_url, "dsn"),
]


def assignment_cases():
    out = []
    for _ in range(20):
        name = rng.choice(["API_KEY", "db_password", "clientSecret", "AUTH_TOKEN", "access_token", "SECRET", "smtp_passwd"])
        value = password()
        out.append((rng.choice([f"{name}={value}", f'"{name}": "{value}"', f"{name}: {value}", f"export {name}='{value}'"]), ["secret_assignment"]))
    for _ in range(15):
        value = aws_secret()
        out.append((rng.choice([f"aws_secret_access_key = {value}", f'"SecretAccessKey": "{value}"', f"AWS_SECRET_ACCESS_KEY={value}"]), ["aws_secret_access_key"]))
    return out


def hard_negatives():
    hexd = "0123456789abcdef"
    out = []
    for _ in range(15):
        u = f"{rand(hexd, 8)}-{rand(hexd, 4)}-4{rand(hexd, 3)}-a{rand(hexd, 3)}-{rand(hexd, 12)}"
        out.append(f"request id {u}")
        out.append(f"sha256:{rand(hexd, 64)}")
        out.append(f"commit {rand(hexd, 40)} by bot")
        out.append(f"md5 {rand(hexd, 32)}")
        out.append(f"version {rng.randint(0, 20)}.{rng.randint(0, 40)}.{rng.randint(0, 99)}")
        out.append(f"build 10.0.{rng.randint(10000, 22000)}.{rng.randint(256, 999)}")
        out.append(f"on {rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}")
        out.append(f"order #{rand(string.digits, 10)} shipped, {rng.randint(1, 99)} items")
        out.append(f"order {luhn_broken('4', 16)} (invalid checksum)")
        out.append(f"tracking {rand(string.digits, 12)}")
        out.append(f"public address {rng.randint(11, 99)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
        out.append(f"coordinates {rng.uniform(-90, 90):.6f}, {rng.uniform(-180, 180):.6f}")
        out.append(f"image data:image/png;base64,{base64.b64encode(bytes(rng.getrandbits(8) for _ in range(60))).decode()}")
        out.append(f"price ${rng.randint(1, 9999)}.{rng.randint(0, 99):02d} incl. tax")
        out.append(f"next_page_token: {rand(ALNUM, 40)}")
        out.append(f"isbn 978-{rng.randint(0, 9)}-{rng.randint(100, 999)}-{rng.randint(10000, 99999)}-{rng.randint(0, 9)}")
        out.append(f"sent {rng.randint(1, 1000)} of {rng.randint(1000, 99999)} bytes in {rng.randint(1, 999)} ms")
        out.append(f"package @scope/{rng.choice(['sdk', 'cli', 'core'])}@{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}")
    out += [
        "Test cards: 4111 1111 1111 1111, 4242 4242 4242 4242, 5555 5555 5555 4444, 3782 822463 10005",
        "Stripe test card 4000 0566 5566 5556 declines",
        "AWS example: AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "GitHub docs example gho_16C7e42F292c6912E7710c838347Ae178B4a",
        "ghp_" + rand(B62, 36) + " (made up, checksum does not match)",
        "Set SLACK_TOKEN=xoxb-your-token-here",
        "password: ${DB_PASSWORD}",
        "password=changeme",
        'password: "<your password>"',
        "api_key: REDACTED",
        "token: ********",
        "max_tokens=4096 temperature=0.2",
        "token_count: 18324",
        "DATABASE_URL=postgres://user:password@localhost:5432/db",
        "redis://localhost:6379/0",
        "postgres://app@db.internal/prod",
        "mysql://root:@127.0.0.1/test",
        "see icon@2x.png and logo@3x.jpg",
        "npm i @modelcontextprotocol/sdk@1.22.0",
        "SSN 078-05-1120 from the 1938 wallet insert; 123-45-6789 from the ads",
        "ssn 000-12-3456 and 666-12-3456 are never issued",
        "loopback 127.0.0.1 and ::1",
        "DNS 8.8.8.8 and 1.1.1.1",
        "sk-this-is-not-a-key",
        "BEGIN PUBLIC KEY and -----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "eyJ is how base64 of {\" begins",
        "UTC+05:30 and +1 more",
        "the IBAN DE00 1234 5678 9012 3456 78 has wrong check digits",
        "Call extension 4567 or room 2-301",
        "time 12:30:45.123 and MAC 00:1a:2b:3c:4d:5e",
        "sk_live_ (empty) and AIza (short)",
        "Bearer <token>",
        "user@localhost and admin@intranet",
    ]
    return [(t, []) for t in out]


# Written by hand, in the shapes tool results really have (file contents, API responses, logs),
# including positives that are easy to miss.
HANDWRITTEN = [
    ("From: Jane Doe <jane.doe@corp.example.com>\nTo: ops@acme.io", ["email"]),
    ("mailto:kwame.mensah@example.org", ["email"]),
    ("Reach me at omar_haddad@mail.acme.io.", ["email"]),
    ("phone: +1-415-555-2671", ["phone"]),
    ("tel 415.555.2671 (cell)", ["phone"]),
    ('{"name":"Li Wei","phone":"+86 10 6552 9988"}', ["phone"]),
    ("Bitte überweisen Sie auf DE89370400440532013000 bis Freitag.", ["iban"]),
    ("IBAN: GB82 WEST 1234 5698 7654 32", ["iban"]),
    ("ssn=219-09-9999", ["us_ssn"]),
    ("Card ending 3012: 4526-0181-5908-3012, exp 11/28", ["payment_card"]),
    ('{"pan":"5166131860913906","cvv":"123"}', ["payment_card"]),
    ("upstream connect error to 10.0.12.7:8080", ["ip_address"]),
    ("inet 192.168.1.23/24 brd 192.168.1.255", ["ip_address"]),
    ("link-local fe80::1ff:fe23:4567:890a%eth0", ["ip_address"]),
    ("[default]\naws_access_key_id = AKIA2OGYBAH6TQLZXQ4M\naws_secret_access_key = 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", ["aws_access_key_id", "aws_secret_access_key"]),
    ('{"Credentials":{"AccessKeyId":"ASIAY34FZKBOKMUTVV7A","SecretAccessKey":"c2Vjcm0tZXhhbXBsZS1ub3QtcmVhbC0xMjM0NTY3","SessionToken":"FwoGZXIvYXdzEBYaDHqa0AP1Rm2uVPm"}}', ["aws_access_key_id", "aws_secret_access_key", "secret_assignment"]),
    ("git remote set-url origin https://x-access-token:ghs_Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz24X8RHx@github.com/acme/app.git", ["github_token"]),
    ("curl -H 'Authorization: Bearer sk-proj-Ab12Cd34Ef56Gh78Ij90T3BlbkFJKl12Mn34Op56Qr78St90' https://api.openai.com/v1/models", ["openai_api_key"]),
    ("curl -H 'Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZ2VudC03In0.QmFkU2lnbmF0dXJlQnl0ZXNIZXJlMDEyMzQ1Njc4OWFi' http://localhost", ["jwt"]),
    ("GET /callback?code=abc&access_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U HTTP/1.1", ["jwt"]),
    ("SLACK_WEBHOOK_URL=https://hooks.slack.com/services/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", ["slack_webhook"]),
    ("stripe.api_key = 'rk_live_51HxQ2eLkd93JfPqR8sTuVwXyZ0aB'", ["stripe_key"]),
    ("<script src=\"https://maps.googleapis.com/maps/api/js?key=AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY\"></script>", ["google_api_key"]),
    ("DATABASE_URL=\"mysql://root:Tr0ub4dor&3@127.0.0.1:3306/app\"", ["database_url"]),
    ("mongodb+srv://reader:Xk29-Lq7_Vm8@cluster0.x1y2.mongodb.net/?retryWrites=true", ["database_url"]),
    ("jdbc:postgresql://db.internal:5432/prod?user=app&password=Vq8-Lm3_Zx7-Rt", ["secret_assignment"]),
    ("SMTP_PASSWORD='N0t-S0-S3cr3t!x'", ["secret_assignment"]),
    ("db:\n  host: db.internal\n  password: Hj7#kL9@mN2$", ["secret_assignment"]),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n", ["private_key"]),
    ("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----", ["private_key"]),
    ("Hello! How can I help you today?", []),
    ("Listed 3 files: README.md, main.rs, Cargo.toml (12 KB)", []),
    ("The meeting is at 10:30 in room 4.12; dial-in code 884 2201.", []),
    ("HTTP/1.1 200 OK\nContent-Length: 1234\nETag: \"33a64df551425fcc55e4d42a148795d9f25f89d4\"", []),
    ("Temperature 21.5°C, humidity 40%, wind 12 km/h", []),
    ("See RFC 7519 section 4.1.4 and ISO 8601 2026-12-01T06:15:53Z", []),
    ("pip install requests==2.31.0 urllib3>=1.26.18", []),
    ("Docker image sha256:4a3f9b2c1d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1", []),
    ("Kubernetes pod 10-244-0-17 in namespace default", []),
    ("The token was rotated; use the new one from the vault.", []),
    ("Set the password field to a value of at least 12 characters.", []),
    ("api_key: <insert your key>", []),
    ('{"token_type":"Bearer","expires_in":3600,"scope":"mcp:tools"}', []),
    ("jwt.io shows header.payload.signature", []),
    ("S3 bucket arn:aws:s3:::acme-logs-2026 in us-east-1", []),
    ("Call 911 or 112 in an emergency", []),
    ("Invoice INV-2026-004512, total 1,234.56 EUR", []),
    ("The answer is 4526018159 and 0181", []),
    ("@here the deploy finished", []),
    ("GitHub user @jane-doe opened PR #4512", []),
    ("winget install Git.Git --version 2.47.3", []),
]


def main():
    cases = []
    for label, make, name in POSITIVES:
        for _ in range(25):
            cases.append((in_context(make(), name), [label]))
    cases += assignment_cases()
    for _ in range(10):
        text = f"Contact {email()} or {phone()}; card {card()}."
        cases.append((text, ["email", "phone", "payment_card"]))
    cases += hard_negatives()
    cases += HANDWRITTEN
    rng.shuffle(cases)
    path = Path(__file__).with_name("dlp.jsonl")
    with path.open("w") as f:
        for text, labels in cases:
            f.write(json.dumps({"text": text, "labels": sorted(set(labels))}, ensure_ascii=False) + "\n")
    print(f"{path}: {len(cases)} cases")


if __name__ == "__main__":
    main()
