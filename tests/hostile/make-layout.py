#!/usr/bin/env python3
"""Builds an OCI image layout of hostile and broken images for skiff's unpack tests.

    make-layout.py OUTDIR TARGET_PREFIX [--big | --zeros]

TARGET_PREFIX is a host path (e.g. /tmp/skiff-hostile-1234) that the hostile layers try to
reach; the test checks that nothing appears there. Each image is a tag in OUTDIR's index.json.
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

out, target = sys.argv[1], sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else ""
big_only = mode == "--big"
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)


def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)


def tar_of(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            info = tarfile.TarInfo(e["name"])
            info.type = e.get("type", tarfile.REGTYPE)
            info.mode = e.get("mode", 0o644)
            info.linkname = e.get("link", "")
            data = e.get("data", b"")
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            t.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def layer(raw):
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    digest, size = put(gzip.compress(raw, mtime=0))
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}, diff_id


index = {"schemaVersion": 2, "manifests": []}


def image(tag, raws, diff_ids=None):
    layers, ids = [], []
    for raw in raws:
        desc, diff_id = layer(raw) if isinstance(raw, bytes) else raw
        layers.append(desc)
        ids.append(diff_id)
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids or ids}}
    cd, cs = put(json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                "layers": layers}
    md, ms = put(json.dumps(manifest).encode())
    index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
                               "size": ms, "annotations": {"org.opencontainers.image.ref.name": tag}})


if mode == "--zeros":
    # 20 MiB of zeros: a few KiB compressed, so only unpacking finds out it does not fit.
    image("zeros", [tar_of([{"name": "zeros", "data": bytes(20 << 20)}])])
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print("zeros")
    sys.exit(0)

if big_only:
    # One 12 MiB layer of random bytes (incompressible), for the free-space check.
    image("big", [tar_of([{"name": "random", "data": os.urandom(12 << 20)}])])
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print("big")
    sys.exit(0)

up = "../" * 12
rel_target = target.lstrip("/")
SYM, LNK, DIR = tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE

image("dotdot", [tar_of([{"name": up + rel_target + "-dotdot", "data": b"x"}])])
image("absolute", [tar_of([{"name": target + "-absolute", "data": b"x"}])])
image("symlink", [tar_of([{"name": "evil", "type": SYM, "link": os.path.dirname(target)},
                          {"name": "evil/" + os.path.basename(target) + "-symlink", "data": b"x"}])])
image("chain", [tar_of([{"name": "a", "type": SYM, "link": "b"},
                        {"name": "b", "type": SYM, "link": up + os.path.dirname(rel_target)},
                        {"name": "a/" + os.path.basename(target) + "-chain", "data": b"x"}])])
image("hardlink", [tar_of([{"name": "h", "type": LNK, "link": up + "etc/passwd"}])])
image("hardlink-abs", [tar_of([{"name": "h", "type": LNK, "link": "/etc/passwd"}])])
# A directory in one layer, a symlink to the host in the next, a file through it in the third:
# each layer unpacks into its own snapshot, so the file stays inside the image.
image("replaced-dir", [tar_of([{"name": "d", "type": DIR, "mode": 0o755}]),
                       tar_of([{"name": "d", "type": SYM, "link": os.path.dirname(target)}]),
                       tar_of([{"name": "d", "type": DIR, "mode": 0o755},
                               {"name": "d/" + os.path.basename(target) + "-replaced", "data": b"x"}])])
# 300 MB of zeros compress to a few hundred KB.
bomb_raw = tar_of([{"name": "zeros", "data": bytes(300 << 20)}])
image("bomb", [bomb_raw])
# A layer whose content does not hash to the diff_id the config claims.
image("wrong-diffid", [tar_of([{"name": "ok", "data": b"fine"}])],
      diff_ids=["sha256:" + "0" * 64])

with open(os.path.join(out, "index.json"), "w") as f:
    json.dump(index, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
print("\n".join(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]))
