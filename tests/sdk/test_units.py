"""SDK pieces on their own: the test vectors, the error mirror, configuration, keychain."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from client_sdk import crypto, errors
from client_sdk.client import AsyncClient
from client_sdk.config import HOSTED_URL
from client_sdk.crypto import AccountKeys, Alg, KdfParams, Kind
from client_sdk.keychain import FileKeychain
from client_sdk.session import Hlc
from server.errors import AppError

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "spec" / "test-vectors.json").read_text()
)


def test_key_hierarchy_matches_the_vectors():
    account = VECTORS["account"]
    secret = bytes.fromhex(account["secret"])
    assert crypto.recovery_code(secret) == account["recovery_code"]
    assert crypto.parse_recovery_code(account["recovery_code"].lower()) == secret
    kdf = account["kdf"]
    keys = AccountKeys.derive(
        secret, KdfParams(bytes.fromhex(kdf["salt"]), kdf["n"], kdf["r"], kdf["p"])
    )
    doc = uuid.UUID(account["doc_id"])
    assert keys.doc_key(doc).hex() == account["doc_key"]
    assert keys.settings_key().hex() == account["settings_key"]
    assert keys.public_key().hex() == account["x25519_public"]


@pytest.mark.parametrize("vector", VECTORS["envelopes"], ids=lambda v: v["kind"])
def test_envelopes_match_the_vectors_and_the_spec(vector):
    key, nonce = bytes.fromhex(vector["key"]), bytes.fromhex(vector["nonce"])
    plaintext, scope = bytes.fromhex(vector["plaintext"]), bytes.fromhex(vector["scope"])
    alg, kind = Alg[vector["alg"]], Kind(vector["kind"])
    sealed = crypto.seal(
        key,
        plaintext,
        kind=kind,
        scope=scope,
        key_version=vector["key_version"],
        alg=alg,
        nonce=nonce,
    )
    assert sealed.hex() == vector["envelope"]
    # The spec, spelled out by hand: header, nonce, AEAD over the AAD of docs/spec/envelope.md.
    header = bytes([1, alg])
    aad = (
        b"session/v1\x00"
        + kind.value.encode()
        + b"\x00"
        + len(scope).to_bytes(2, "big")
        + scope
        + vector["key_version"].to_bytes(4, "big")
        + header
    )
    assert aad.hex() == vector["aad"]
    aead = AESGCM(key) if alg is Alg.AES_256_GCM else ChaCha20Poly1305(key)
    assert sealed == header + nonce + aead.encrypt(nonce, plaintext, aad)
    assert (
        crypto.open_envelope(key, sealed, kind=kind, scope=scope, key_version=vector["key_version"])
        == plaintext
    )


def test_room_key_wrap_matches_the_vectors():
    wrap = VECTORS["room_key_wrap"]
    doc = uuid.UUID(wrap["doc_id"])
    eph = X25519PrivateKey.from_private_bytes(bytes.fromhex(wrap["ephemeral_private"]))
    wrapped = crypto.wrap_room_key(
        bytes.fromhex(wrap["room_key"]),
        bytes.fromhex(wrap["recipient_public"]),
        doc,
        wrap["key_version"],
        eph,
    )
    assert wrapped.hex() == wrap["wrapped"]
    me = X25519PrivateKey.from_private_bytes(bytes.fromhex(wrap["recipient_private"]))
    assert crypto.unwrap_room_key(me, wrapped, doc, wrap["key_version"]).hex() == wrap["room_key"]
    with pytest.raises(errors.DecryptError):
        crypto.unwrap_room_key(X25519PrivateKey.generate(), wrapped, doc, wrap["key_version"])
    with pytest.raises(errors.DecryptError):
        crypto.unwrap_room_key(me, wrapped, doc, wrap["key_version"] + 1)


def test_every_server_problem_type_has_an_sdk_exception():
    def walk(cls):
        yield cls
        for sub in cls.__subclasses__():
            yield from walk(sub)

    import server.app  # noqa: F401 - registers every error class

    for cls in walk(AppError):
        if cls.slug and cls.__name__ != "ClientError":
            assert cls.slug in errors.BY_SLUG, cls
            assert (
                errors.problem(cls.status, {"type": f"urn:session-sync:problem:{cls.slug}"}).status
                == cls.status
            )


def test_base_url_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("SESSION_SYNC_URL", raising=False)
    assert AsyncClient(state_dir=str(tmp_path)).base_url == HOSTED_URL
    monkeypatch.setenv("SESSION_SYNC_URL", "https://sync.example.org/")
    assert AsyncClient(state_dir=str(tmp_path)).base_url == "https://sync.example.org"
    assert (
        AsyncClient("http://127.0.0.1:9", state_dir=str(tmp_path)).base_url == "http://127.0.0.1:9"
    )


def test_the_keychain_file_is_private(tmp_path):
    chain = FileKeychain(tmp_path / "state" / "keychain.json")
    chain.set("tokens", "x")
    chain.set("other", "y")
    assert stat.S_IMODE((tmp_path / "state" / "keychain.json").stat().st_mode) == 0o600
    assert FileKeychain(tmp_path / "state" / "keychain.json").get("tokens") == "x"
    chain.delete("tokens")
    assert chain.get("tokens") is None and chain.get("other") == "y"


def test_hybrid_logical_clock_is_monotonic_and_follows_others():
    clock = Hlc()
    stamps = [clock.now() for _ in range(50)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 50
    clock.observe("999999999999999.00007")
    assert clock.now() == "999999999999999.00008"


def test_bad_envelopes_say_why():
    key = bytes(32)
    with pytest.raises(errors.DecryptError, match="too short"):
        crypto.open_envelope(key, b"\x01\x01", kind=Kind.UPDATE, scope=b"", key_version=0)
    sealed = crypto.seal(key, b"x", kind=Kind.UPDATE, scope=b"", key_version=0)
    with pytest.raises(errors.DecryptError, match="version"):
        crypto.open_envelope(key, b"\x09" + sealed[1:], kind=Kind.UPDATE, scope=b"", key_version=0)
    with pytest.raises(ValueError):
        crypto.parse_recovery_code("not-a-code")
