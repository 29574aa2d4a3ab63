"""Write docs/spec/test-vectors.json: fixed inputs and the bytes the envelope spec implies.

python tools/make_test_vectors.py          # (re)write the file
python tools/make_test_vectors.py --check  # exit 1 if the SDK no longer matches it
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from client_sdk import crypto
from client_sdk.crypto import AccountKeys, Alg, KdfParams, Kind

OUT = Path(__file__).resolve().parent.parent / "docs" / "spec" / "test-vectors.json"

SECRET = bytes(range(32))
SALT = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
DOC = uuid.UUID("0a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9")
NONCE = bytes.fromhex("101112131415161718191a1b")
EPHEMERAL = bytes.fromhex("a0" * 32)


def vectors() -> dict[str, object]:
    kdf = KdfParams(salt=SALT, n=2**14, r=8, p=1)
    keys = AccountKeys.derive(SECRET, kdf)
    doc_key = keys.doc_key(DOC)
    out: dict[str, object] = {
        "account": {
            "secret": SECRET.hex(),
            "recovery_code": crypto.recovery_code(SECRET),
            "kdf": {"alg": "scrypt", "salt": SALT.hex(), "n": kdf.n, "r": kdf.r, "p": kdf.p},
            "master_key": keys._master.hex(),
            "doc_id": str(DOC),
            "doc_key": doc_key.hex(),
            "settings_key": keys.settings_key().hex(),
            "x25519_public": keys.public_key().hex(),
        },
        "envelopes": [],
    }
    envelopes: list[dict[str, object]] = []
    for alg, kind, scope, key_version, plaintext in [
        (Alg.AES_256_GCM, Kind.UPDATE, DOC.bytes, 0, b"a Yjs update"),
        (Alg.CHACHA20_POLY1305, Kind.SNAPSHOT, DOC.bytes, 3, b"a Yjs state"),
        (Alg.AES_256_GCM, Kind.SETTING, crypto.setting_scope("theme"), 0, b'"dark"'),
    ]:
        key = doc_key if kind is not Kind.SETTING else keys.settings_key()
        header = bytes([crypto.ENVELOPE_VERSION, alg])
        envelopes.append(
            {
                "alg": alg.name,
                "kind": kind.value,
                "scope": scope.hex(),
                "key_version": key_version,
                "key": key.hex(),
                "nonce": NONCE.hex(),
                "plaintext": plaintext.hex(),
                "aad": crypto.associated_data(kind, scope, key_version, header).hex(),
                "envelope": crypto.seal(
                    key,
                    plaintext,
                    kind=kind,
                    scope=scope,
                    key_version=key_version,
                    alg=alg,
                    nonce=NONCE,
                ).hex(),
            }
        )
    out["envelopes"] = envelopes
    room_key = bytes(range(100, 132))
    eph = X25519PrivateKey.from_private_bytes(EPHEMERAL)
    out["room_key_wrap"] = {
        "room_key": room_key.hex(),
        "recipient_public": keys.public_key().hex(),
        "recipient_private": keys.identity().private_bytes_raw().hex(),
        "ephemeral_private": EPHEMERAL.hex(),
        "doc_id": str(DOC),
        "key_version": 2,
        "wrapped": crypto.wrap_room_key(room_key, keys.public_key(), DOC, 2, eph).hex(),
    }
    return out


def main() -> int:
    text = json.dumps(vectors(), indent=2) + "\n"
    if "--check" in sys.argv:
        if OUT.read_text() != text:
            print(f"{OUT} does not match the SDK", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
