#!/usr/bin/env python3
"""Independent image oracle: pulls REPO:TAG from a plain-HTTP registry with Python's
standard library only (urllib, tarfile, hashlib), checks every digest, applies the
layers with overlay rules and prints the flattened filesystem and config as JSON.
It shares no code with Kiln, so a bug in Kiln's reader cannot hide a bug in Kiln's
writer.

usage: flatten.py HOST:PORT REPO:TAG

Names are bytes: a byte that is not UTF-8 is printed as \\xNN. xattrs are hex.
"""
import hashlib
import io
import json
import sys
import tarfile
import urllib.request

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def get(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def verified(data, digest):
    algo, want = digest.split(":", 1)
    got = hashlib.new(algo, data).hexdigest()
    if got != want:
        sys.exit(f"oracle: blob {digest} hashes to {algo}:{got}")
    return data


def show(name_bytes):
    return name_bytes.decode("utf-8", "backslashreplace")


def clean(name):
    parts = []
    for p in name.split(b"/"):
        if p in (b"", b"."):
            continue
        if p == b"..":
            if parts:
                parts.pop()
            continue
        parts.append(p)
    return b"/".join(parts)


def main():
    host, ref = sys.argv[1], sys.argv[2]
    # An index gives ARCH's manifest (argv[3], amd64 when not given).
    arch = sys.argv[3] if len(sys.argv) > 3 else "amd64"
    repo, tag = ref.rsplit(":", 1)
    base = f"http://{host}/v2/{repo}"
    manifest = json.loads(get(f"{base}/manifests/{tag}", ACCEPT))
    while "manifests" in manifest:
        pick = [m for m in manifest["manifests"]
                if m.get("platform", {}).get("os", "linux") == "linux"
                and m.get("platform", {}).get("architecture", "amd64") == arch]
        if not pick:
            sys.exit(f"{ref}: the index has no manifest for linux/{arch}")
        d = pick[0]["digest"]
        manifest = json.loads(verified(get(f"{base}/manifests/{d}", ACCEPT), d))
    config = json.loads(verified(get(f"{base}/blobs/{manifest['config']['digest']}"),
                                 manifest["config"]["digest"]))
    files = {}   # name bytes -> entry
    layers = []
    for layer in manifest["layers"]:
        blob = verified(get(f"{base}/blobs/{layer['digest']}"), layer["digest"])
        apply_layer(files, blob)
        layers.append(list_layer(blob))
    out = {show(k): v for k, v in sorted(files.items())}
    print(json.dumps({"config": config, "manifest": manifest, "files": out,
                      "layers": layers}))


# Times before this were set on purpose (touch -d, an archive's), so they compare.
OLD = 1_600_000_000


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def open_tar(blob):
    """A layer's tar: gzip, bzip2 and xz by tarfile itself, zstd by Debian's
    python3-zstandard (the standard library has none before 3.14)."""
    if blob.startswith(ZSTD_MAGIC):
        try:
            import zstandard
        except ImportError:
            sys.exit("a zstd layer needs python3-zstandard: apt-get install python3-zstandard (.ci/run does this)")
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)) as r:
            blob = r.read()
    return tarfile.open(fileobj=io.BytesIO(blob), mode="r:*",
                        encoding="utf-8", errors="surrogateescape")


def list_layer(blob):
    """Each entry of one layer as it is in the tar: name, type, mode, owner, and
    the time when it is an old one."""
    rows = []
    with open_tar(blob) as tf:
        for m in tf:
            name = show(clean(m.name.encode("utf-8", "surrogateescape")))
            row = f"{name} {m.type.decode()} {m.mode & 0o7777:o} {m.uid}:{m.gid}"
            if m.mtime < OLD:
                row += f" t={int(m.mtime)}"
            rows.append(row)
    return sorted(rows)


def remove_tree(files, name, keep=()):
    prefix = name + b"/" if name else b""
    for k in [k for k in files if (k == name or k.startswith(prefix)) and k not in keep]:
        del files[k]


def apply_layer(files, blob):
    this_layer = set()
    with open_tar(blob) as tf:
        for m in tf:
            name = clean(m.name.encode("utf-8", "surrogateescape"))
            parent, _, base = name.rpartition(b"/")
            # Overlay rule: every parent of an entry is a directory in this layer,
            # whatever a lower layer had there.
            p = parent
            chain = []
            while p:
                chain.append(p)
                p = p.rpartition(b"/")[0]
            for p in reversed(chain):
                if p in files and files[p]["type"] != "dir":
                    remove_tree(files, p)
                if p not in files:
                    files[p] = {"type": "dir", "mode": 0o755, "uid": 0, "gid": 0}
            if base == b".wh..wh..opq":
                remove_tree(files, parent, keep=this_layer | {parent})
                continue
            if base.startswith(b".wh."):
                hidden = base[4:]
                remove_tree(files, parent + b"/" + hidden if parent else hidden)
                continue
            entry = {"mode": m.mode & 0o7777, "uid": m.uid, "gid": m.gid}
            xattrs = {k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape").hex()
                      for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            if xattrs:
                entry["xattrs"] = xattrs
            if m.isreg():
                data = tf.extractfile(m).read()
                entry.update(type="file", size=len(data),
                             sha256=hashlib.sha256(data).hexdigest())
            elif m.isdir():
                entry["type"] = "dir"
            elif m.issym():
                entry.update(type="symlink", link=show(m.linkname.encode("utf-8", "surrogateescape")))
            elif m.islnk():
                target = clean(m.linkname.encode("utf-8", "surrogateescape"))
                entry.update({k: v for k, v in files.get(target, {}).items()
                              if k in ("type", "size", "sha256")})
                entry["hardlink"] = show(target)
            elif m.ischr() or m.isblk():
                entry.update(type="char" if m.ischr() else "block",
                             dev=[m.devmajor, m.devminor])
            elif m.isfifo():
                entry["type"] = "fifo"
            else:
                continue
            if entry["type"] != "dir":
                remove_tree(files, name)
            elif name in files and files[name]["type"] != "dir":
                remove_tree(files, name)
            files[name] = entry
            this_layer.add(name)


if __name__ == "__main__":
    main()
