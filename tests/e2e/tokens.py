"""Hand-made JWTs for attack tests: RS256 signed with a key we choose (RFC 7515 §3, RFC 7518 §3.3)."""
from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode_part(token: str, index: int) -> dict:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def load_key(path: Path):
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign(key, header: dict, claims: dict) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def claims(agent: str, issuer: str, audience: str, **overrides) -> dict:
    now = int(time.time())
    base = {"iss": issuer, "sub": agent, "aud": audience, "iat": now, "nbf": now,
            "exp": now + 300, "jti": secrets.token_hex(16), "client_id": agent, "scope": "mcp"}
    base.update(overrides)
    return base
