"""Node tokens: what is stored of them (a SHA-256), and the hash no token can match (nodes known only from etcd)."""
import hashlib
import secrets

# Real token hashes are 64 hex digits, so a hash with this prefix never matches a token.
UNUSABLE_TOKEN_PREFIX = "!etcd:"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_new() -> str:
    return secrets.token_urlsafe(32)


def unusable_token_hash() -> str:
    return UNUSABLE_TOKEN_PREFIX + secrets.token_hex(29)  # 64 characters, like a sha256 hex digest
