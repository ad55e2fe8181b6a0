#!/usr/bin/env python3
"""Verifies a jobforge-signed image the way cosign does, with code that is not jobforge's:
hvac reads the transit public key from Vault, the registry is read over its HTTP API
(OCI distribution spec), and `cryptography` checks the ECDSA signatures.

Usage: cosign_verify.py <vault url> <token> <transit key> <registry host:port> <repository>
                        <digest> [--sig-of DIGEST] [--flip-byte]
- the signature image is `<repository>:sha256-<hex>.sig` of DIGEST (or of --sig-of's digest,
  to check that a signature moved to another image fails); its simple-signing layer must verify
  against the public key and name <registry>/<repository> and <digest>;
- the attestation `<repository>:sha256-<hex>.att` is a DSSE envelope whose signature over the
  PAE verifies, with an in-toto Statement v1 / SLSA provenance v1 whose subject is <digest>.
--flip-byte changes one byte of each payload before checking (must fail).
On success prints the statement JSON and exits 0; on any failed check prints FAIL and exits 1.
"""
import base64
import hashlib
import json
import sys
import urllib.request

import hvac
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIMPLE = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
SIG_ANN = "dev.cosignproject.cosign/signature"


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def get(url, accept=None):
    req = urllib.request.Request(url)
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req) as r:
        return r.read()


def artifact(registry, repo, digest, suffix, media_type):
    tag = "sha256-" + digest.split(":", 1)[1] + suffix
    raw = get(f"http://{registry}/v2/{repo}/manifests/{tag}",
              "application/vnd.oci.image.manifest.v1+json")
    manifest = json.loads(raw)
    layers = [l for l in manifest["layers"] if l["mediaType"] == media_type]
    if len(layers) != 1:
        fail(f"{tag}: {len(layers)} layers of {media_type}")
    layer = layers[0]
    blob = get(f"http://{registry}/v2/{repo}/blobs/{layer['digest']}")
    if "sha256:" + hashlib.sha256(blob).hexdigest() != layer["digest"]:
        fail(f"{tag}: layer blob does not match its digest")
    return layer, blob


def verify(public_key, der, data, what):
    try:
        public_key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        fail(f"{what}: signature does not verify")


def flip(data):
    b = bytearray(data)
    b[len(b) // 2] ^= 0x01
    return bytes(b)


def main():
    args = sys.argv[1:]
    flip_byte = "--flip-byte" in args
    args = [a for a in args if a != "--flip-byte"]
    sig_of = None
    if "--sig-of" in args:
        i = args.index("--sig-of")
        sig_of = args[i + 1]
        del args[i:i + 2]
    if len(args) != 6:
        fail(__doc__)
    vault, token, key, registry, repo, digest = args
    keys = hvac.Client(url=vault, token=token).secrets.transit.read_key(name=key)["data"]["keys"]
    pem = keys[str(max(int(v) for v in keys))]["public_key"]
    public_key = serialization.load_pem_public_key(pem.encode())

    # The signature.
    layer, payload = artifact(registry, repo, sig_of or digest, ".sig", SIMPLE)
    der = base64.b64decode(layer["annotations"][SIG_ANN], validate=True)
    if flip_byte:
        payload = flip(payload)
    verify(public_key, der, payload, "simple signing payload")
    critical = json.loads(payload)["critical"]
    if critical["type"] != "cosign container image signature":
        fail(f"payload type {critical['type']!r}")
    if critical["image"]["docker-manifest-digest"] != digest:
        fail(f"the signature is for {critical['image']['docker-manifest-digest']}, not {digest}")
    if critical["identity"]["docker-reference"] != f"{registry}/{repo}":
        fail(f"the signature names {critical['identity']['docker-reference']}")

    # The attestation.
    layer, blob = artifact(registry, repo, sig_of or digest, ".att", DSSE)
    if layer["annotations"].get("predicateType") != "https://slsa.dev/provenance/v1":
        fail(f"attestation predicateType annotation {layer['annotations']!r}")
    env = json.loads(blob)
    body = base64.b64decode(env["payload"], validate=True)
    if flip_byte:
        body = flip(body)
    ptype = env["payloadType"].encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(body), body)
    verify(public_key, base64.b64decode(env["signatures"][0]["sig"]), pae, "DSSE envelope")
    statement = json.loads(body)
    if statement["_type"] != "https://in-toto.io/Statement/v1":
        fail(f"statement type {statement['_type']!r}")
    if statement["predicateType"] != "https://slsa.dev/provenance/v1":
        fail(f"predicate type {statement['predicateType']!r}")
    if "sha256:" + statement["subject"][0]["digest"]["sha256"] != digest:
        fail(f"provenance subject {statement['subject']!r} is not {digest}")
    print(json.dumps(statement))


if __name__ == "__main__":
    main()
