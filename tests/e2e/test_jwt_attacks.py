"""The JWT attack checklist (RFC 8725, JSON Web Token Best Current Practices) through real Envoy:
every forged or misused token is refused, and nothing reaches the upstream.

RFC 8725 §2.1/§3.1 (algorithm confusion: `none`, HS256 keyed with the RSA public key, algorithms
outside the allow-list), §3.10 (`jku`/`x5u`/inline `jwk`: keys must come from configuration, never
from the token), §3.8-3.9 (issuer and audience), §3.11 (explicit typing: `at+jwt`, RFC 9068 §2.1),
RFC 7519 §4.1.4-4.1.5 (`exp`, `nbf`), and a tampered signature. Envoy's jwt_authn refuses most;
the behavry filter refuses tokens whose `typ` is not `at+jwt`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

import tokens
from harness import AGENT, ISSUER, http

CALL = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "raw", "arguments": {}}}).encode()


def unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    return ".".join([tokens.b64url(json.dumps(header).encode()),
                     tokens.b64url(json.dumps(claims).encode()), tokens.b64url(signature)])


def public_jwk(stack) -> dict:
    _, _, body = http("GET", f"http://127.0.0.1:{stack.ports['authz']}/.well-known/jwks.json")
    return json.loads(body)["keys"][0]


def attack(stack, case: str) -> str:
    key = tokens.load_key(stack.signing_key_path())
    jwk = public_jwk(stack)
    kid = jwk["kid"]
    good_header = {"alg": "RS256", "typ": "at+jwt", "kid": kid}
    now = int(time.time())
    claims = tokens.claims(AGENT, ISSUER, stack.audience)
    if case.startswith("alg-none-"):
        return unsigned({"alg": case.removeprefix("alg-none-"), "typ": "at+jwt", "kid": kid}, claims)
    if case == "hs256-with-public-key":
        from cryptography.hazmat.primitives import serialization
        pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
        signing_input = f"{tokens.b64url(json.dumps(header).encode())}.{tokens.b64url(json.dumps(claims).encode())}"
        mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{tokens.b64url(mac)}"
    if case == "alg-outside-allow-list":
        # RS512 with the real key: a valid signature under an algorithm the JWKS does not allow.
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        header = {"alg": "RS512", "typ": "at+jwt", "kid": kid}
        signing_input = f"{tokens.b64url(json.dumps(header).encode())}.{tokens.b64url(json.dumps(claims).encode())}"
        sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA512())
        return f"{signing_input}.{tokens.b64url(sig)}"
    if case == "inline-jwk":
        attacker = tokens.new_key()
        numbers = attacker.public_key().public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        header = {**good_header, "kid": "attacker", "jwk": {"kty": "RSA", "e": "AQAB", "n": tokens.b64url(n)}}
        return tokens.sign(attacker, header, claims)
    if case in ("jku", "x5u"):
        return tokens.sign(tokens.new_key(), {**good_header, "kid": "attacker",
                                              case: "http://127.0.0.1:1/keys.json"}, claims)
    if case == "kid-unknown":
        return tokens.sign(tokens.new_key(), {**good_header, "kid": "no-such-key"}, claims)
    if case == "kid-path":
        return tokens.sign(tokens.new_key(), {**good_header, "kid": "../../../../dev/null"}, claims)
    if case == "expired":
        return tokens.sign(key, good_header, {**claims, "iat": now - 3600, "nbf": now - 3600,
                                              "exp": now - 600})
    if case == "missing-exp":
        return tokens.sign(key, good_header, {k: v for k, v in claims.items() if k != "exp"})
    if case == "iat-future":
        return tokens.sign(key, good_header, {**claims, "iat": now + 600})
    if case == "nbf-future":
        return tokens.sign(key, good_header, {**claims, "nbf": now + 600, "exp": now + 900})
    if case == "wrong-iss":
        return tokens.sign(key, good_header, {**claims, "iss": "https://evil.example"})
    if case == "wrong-aud":
        return tokens.sign(key, good_header, {**claims, "aud": "another-gateway"})
    if case == "missing-aud":
        return tokens.sign(key, good_header, {k: v for k, v in claims.items() if k != "aud"})
    if case == "typ-jwt":
        # A validly signed JWT that is not an access token (e.g. an ID token): RFC 9068 §4.
        return tokens.sign(key, {**good_header, "typ": "JWT"}, claims)
    if case == "typ-missing":
        return tokens.sign(key, {"alg": "RS256", "kid": kid}, claims)
    if case == "tampered-signature":
        token = tokens.sign(key, good_header, claims)
        head, body, sig = token.split(".")
        raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
        raw[10] ^= 0x01
        return f"{head}.{body}.{tokens.b64url(bytes(raw))}"
    raise ValueError(case)


CASES = [
    "alg-none-none", "alg-none-None", "alg-none-NONE", "alg-none-nOnE",
    "hs256-with-public-key", "alg-outside-allow-list", "inline-jwk", "jku", "x5u",
    "kid-unknown", "kid-path", "expired", "missing-exp", "nbf-future", "iat-future", "wrong-iss", "wrong-aud",
    "missing-aud", "tampered-signature", "typ-jwt", "typ-missing",
]


@pytest.mark.parametrize("case", CASES)
def test_jwt_attack_is_refused_and_nothing_reaches_the_upstream(stack, case):
    token = attack(stack, case)
    before = stack.upstream_requests()
    status, headers, body = http("POST", stack.url("raw") + "/split-sse", CALL, {
        "authorization": f"Bearer {token}", "content-type": "application/json",
        "accept": "application/json, text/event-stream"})
    assert status in (401, 403), (status, body)
    if status == 401:
        assert headers.get("www-authenticate", "").startswith("Bearer")
    assert stack.upstream_requests() == before, "a forged token reached the upstream"
