#!/usr/bin/env python3
# Re-derives the golden files from docs/formats.md alone, with pyca/cryptography (an
# implementation independent of coffer and its OpenSSL calls). Not part of ctest, since the
# Python package is optional:  python3 tests/crypto/golden/verify_independently.py
import json, struct
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives import hmac, hashes
def hkdf_extract(salt, ikm):
    h = hmac.HMAC(salt, hashes.SHA256()); h.update(ikm); return h.finalize()
def hkdf_expand(prk, info, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
        h = hmac.HMAC(prk, hashes.SHA256()); h.update(t + info + bytes([i])); t = h.finalize(); out += t; i += 1
    return out[:n]
import os
G = os.path.dirname(os.path.abspath(__file__)) + "/"
for v in json.load(open(G + "record_v1.json"))["vectors"]:
    key, nonce = bytes.fromhex(v["key"]), bytes.fromhex(v["nonce"])
    header = b"\x01" + struct.pack(">I", v["key_version"])
    ct = AESGCM(key).encrypt(nonce, bytes.fromhex(v["plaintext"]), header + bytes.fromhex(v["associated_data"]))
    assert header + nonce + ct == bytes.fromhex(v["ciphertext"]), v["name"]
for v in json.load(open(G + "stream_v1.json"))["vectors"]:
    key, salt, prefix = bytes.fromhex(v["key"]), bytes.fromhex(v["salt"]), bytes.fromhex(v["nonce_prefix"])
    S, ctx, pt = v["segment_size"], bytes.fromhex(v["context"]), bytes.fromhex(v["plaintext"])
    fields = b"\x02" + struct.pack(">II", v["key_version"], S) + salt + prefix
    prk = hkdf_extract(salt, key)
    subkey = hkdf_expand(prk, b"coffer stream v1 key" + fields + ctx, 32)
    commit = hkdf_expand(prk, b"coffer stream v1 cmt" + fields + ctx, 32)
    out = fields + commit
    segs = [pt[i:i+S] for i in range(0, len(pt), S)] or [b""]
    for i, s in enumerate(segs):
        nonce = prefix + struct.pack(">I", i) + bytes([1 if i == len(segs) - 1 else 0])
        out += AESGCM(subkey).encrypt(nonce, s, None)
    assert out == bytes.fromhex(v["ciphertext"]), v["name"]
print("golden files match the documented derivation")
