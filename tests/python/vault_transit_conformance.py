#!/usr/bin/env python3
"""Checks the Vault emulator's transit engine with third-party code (hvac 2.4.0's transit client,
and the `cryptography` package for the signatures).

Usage: vault_transit_conformance.py <vault url> <root token>
As an operator: enables transit (sys.enable_secrets_engine), creates an ecdsa-p256 key
(secrets.transit.create_key) and reads its public key (read_key: keys.1.public_key, PEM). Signs
with every marshaling and a prehashed digest (sign_data), checks each signature with
`cryptography` against that public key, and with verify_signed_data (valid, and not valid for
another input). Then, with a token whose policy allows only transit/sign/<key>, signing works
and reading the key, verifying, or signing with another key are 403. Malformed requests are 400.
Exits non-zero on the first mismatch.
"""
import base64
import hashlib
import sys

import hvac
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from hvac import exceptions

DENIED = "1 error occurred:\n\t* permission denied\n\n"

SIGNER = """
path "transit/sign/jobforge" {
  capabilities = ["update"]
}
"""


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def forbidden(what, f):
    try:
        f()
    except exceptions.Forbidden as e:
        if DENIED not in (e.errors or []):
            fail(f"{what}: 403 body {e.errors!r}, want [{DENIED!r}]")
        return
    fail(f"{what}: was allowed")


def invalid(what, f):
    try:
        f()
    except exceptions.InvalidRequest:
        return
    fail(f"{what}: was not refused with 400")


def b64(data):
    return base64.b64encode(data).decode()


def check_der(public_key, signature, data, what):
    prefix = "vault:v1:"
    if not signature.startswith(prefix):
        fail(f"{what}: signature {signature!r} lacks {prefix}")
    der = base64.b64decode(signature[len(prefix):], validate=True)
    try:
        public_key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        fail(f"{what}: cryptography rejects the signature")
    try:
        public_key.verify(der, data + b"x", ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return
    fail(f"{what}: the signature also verifies another input")


def main():
    if len(sys.argv) != 3:
        fail("usage: vault_transit_conformance.py <vault url> <root token>")
    url, root_token = sys.argv[1], sys.argv[2]
    root = hvac.Client(url=url, token=root_token)
    transit = root.secrets.transit

    # Before the engine is enabled there is nothing at transit/.
    try:
        transit.read_key(name="jobforge")
        fail("read_key before enabling transit succeeded")
    except exceptions.InvalidPath:
        pass
    root.sys.enable_secrets_engine(backend_type="transit", path="transit")
    if "transit/" not in root.sys.list_mounted_secrets_engines()["data"]:
        fail("transit/ not listed in sys/mounts")
    invalid("enabling transit twice at the same path",
            lambda: root.sys.enable_secrets_engine(backend_type="transit", path="transit"))

    created = transit.create_key(name="jobforge", key_type="ecdsa-p256")
    if created["data"]["type"] != "ecdsa-p256" or created["data"]["latest_version"] != 1:
        fail(f"create_key answered {created['data']!r}")
    again = transit.create_key(name="jobforge", key_type="ecdsa-p256")
    if again.get("warnings") != ["key jobforge already existed"]:
        fail(f"second create_key warnings {again.get('warnings')!r}")
    invalid("an unknown key type", lambda: root.adapter.post(
        "/v1/transit/keys/bad", json={"type": "ecdsa-p999"}))
    key = transit.read_key(name="jobforge")["data"]
    if not key["supports_signing"] or key["supports_encryption"]:
        fail(f"read_key capabilities {key!r}")
    pem = key["keys"]["1"]["public_key"]
    if key["keys"]["1"]["name"] != "P-256":
        fail(f"key name {key['keys']['1']['name']!r}")
    public_key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(public_key.curve, ec.SECP256R1):
        fail(f"public key curve {public_key.curve.name}")
    try:
        transit.read_key(name="missing")
        fail("read_key of a missing key succeeded")
    except exceptions.InvalidPath:
        pass

    data = b"payload to sign"
    asn1 = transit.sign_data(name="jobforge", hash_input=b64(data),
                             hash_algorithm="sha2-256", marshaling_algorithm="asn1")
    sig = asn1["data"]["signature"]
    check_der(public_key, sig, data, "asn1 signature")
    if not transit.verify_signed_data(name="jobforge", hash_input=b64(data),
                                      signature=sig)["data"]["valid"]:
        fail("verify_signed_data rejects its own signature")
    if transit.verify_signed_data(name="jobforge", hash_input=b64(data + b"!"),
                                  signature=sig)["data"]["valid"]:
        fail("verify_signed_data accepts another input")

    # Prehashed: the input is the digest, signed as is.
    digest = hashlib.sha256(data).digest()
    pre = transit.sign_data(name="jobforge", hash_input=b64(digest), prehashed=True,
                            hash_algorithm="sha2-256")["data"]["signature"]
    der = base64.b64decode(pre.split(":", 2)[2])
    try:
        public_key.verify(der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature:
        fail("prehashed signature does not verify")

    # JWS: r||s, unpadded URL-safe base64.
    jws = transit.sign_data(name="jobforge", hash_input=b64(data),
                            marshaling_algorithm="jws")["data"]["signature"]
    raw = jws.split(":", 2)[2]
    if "=" in raw or "+" in raw or "/" in raw:
        fail(f"jws signature {raw!r} is not unpadded URL-safe base64")
    rs = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    if len(rs) != 64:
        fail(f"jws signature has {len(rs)} bytes")
    der = utils.encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))
    try:
        public_key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        fail("jws signature does not verify")
    if not transit.verify_signed_data(name="jobforge", hash_input=b64(data), signature=jws,
                                      marshaling_algorithm="jws")["data"]["valid"]:
        fail("verify_signed_data rejects its jws signature")

    # sha2-384 over P-256 (the digest is truncated, as Go's ecdsa does).
    s384 = transit.sign_data(name="jobforge", hash_input=b64(data),
                             hash_algorithm="sha2-384")["data"]["signature"]
    try:
        public_key.verify(base64.b64decode(s384.split(":", 2)[2]), data, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        fail("sha2-384 signature does not verify")

    invalid("an unknown hash algorithm", lambda: root.adapter.post(
        "/v1/transit/sign/jobforge", json={"input": b64(data), "hash_algorithm": "md5"}))
    invalid("input that is not base64", lambda: root.adapter.post(
        "/v1/transit/sign/jobforge", json={"input": "%%%"}))
    invalid("signing with a missing key", lambda: transit.sign_data(
        name="missing", hash_input=b64(data)))
    invalid("a signature without the vault prefix", lambda: transit.verify_signed_data(
        name="jobforge", hash_input=b64(data), signature="v1:abc"))
    invalid("a key version above the latest", lambda: transit.sign_data(
        name="jobforge", hash_input=b64(data), key_version=2))

    # A token that may only sign with this key.
    root.sys.create_or_update_acl_policy(name="signer", policy=SIGNER)
    token = root.auth.token.create(policies=["signer"], ttl="1h")["auth"]["client_token"]
    signer = hvac.Client(url=url, token=token).secrets.transit
    sig2 = signer.sign_data(name="jobforge", hash_input=b64(data))["data"]["signature"]
    check_der(public_key, sig2, data, "signature by the signer token")
    transit.create_key(name="other", key_type="ecdsa-p256")
    forbidden("signing with another key", lambda: signer.sign_data(
        name="other", hash_input=b64(data)))
    forbidden("reading the key", lambda: signer.read_key(name="jobforge"))
    forbidden("verifying", lambda: signer.verify_signed_data(
        name="jobforge", hash_input=b64(data), signature=sig2))
    forbidden("creating a key", lambda: signer.create_key(name="mine", key_type="ecdsa-p256"))
    forbidden("signing with a URL hash algorithm (another ACL path)", lambda: signer.sign_data(
        name="jobforge/sha2-256", hash_input=b64(data)))
    nobody = hvac.Client(url=url, token="not-a-token").secrets.transit
    forbidden("an unknown token", lambda: nobody.sign_data(name="jobforge", hash_input=b64(data)))
    print("ok")


if __name__ == "__main__":
    main()
