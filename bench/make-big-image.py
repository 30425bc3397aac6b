#!/usr/bin/env python3
"""Writes an OCI layout with one synthetic image: LAYERS layers of MIB MiB each (random, so
incompressible, gzip level 1), for bench/pull.

    make-big-image.py OUTDIR [LAYERS] [MIB]
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

out = sys.argv[1]
layers_n = int(sys.argv[2]) if len(sys.argv) > 2 else 5
mib = int(sys.argv[3]) if len(sys.argv) > 3 else 40
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)


def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + d, "size": len(data)}


layers, diff_ids = [], []
for i in range(layers_n):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for j in range(8):
            data = os.urandom(mib * 1024 * 1024 // 8)
            info = tarfile.TarInfo(f"layer{i}/file{j}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    layers.append(dict(put(gzip.compress(raw, compresslevel=1, mtime=0)),
                       mediaType="application/vnd.oci.image.layer.v1.tar+gzip"))
config = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode())
config["mediaType"] = "application/vnd.oci.image.config.v1+json"
manifest = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config, "layers": layers}).encode())
manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
manifest["annotations"] = {"org.opencontainers.image.ref.name": "big"}
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [manifest]}, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
