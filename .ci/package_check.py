#!/usr/bin/env python3
"""Packages every library crate and checks each package alone, from its packaged sources.

1. `cargo package --workspace --no-verify` (minus the unpublished members) builds the `.crate`
   files, resolving the crates' dependencies on each other through cargo's temporary local
   registry, and checks the manifests (metadata, `include` lists, version requirements).
2. Each `.crate` is unpacked into a scratch workspace whose `[patch.crates-io]` points every
   sparsity-lab crate at its unpacked package, with the repository's Cargo.lock and profiles.
3. `cargo check -p <crate> --lib` runs for each crate alone (its own feature resolution), and with
   `--no-default-features` where it has default features. A warning from our code fails.

Step 3 stands in for cargo's own verification (`cargo package` without `--no-verify`), which
builds every package from scratch in the default dev profile: 20+ minutes on the 2-core CI
machine (docs/design.md, "Packages"). Checking the unpacked sources proves the same two things,
that the package is complete and that the crate compiles alone, and reuses clippy's dependency
builds. Writes `target/package/sizes.json` (name, files, bytes of each `.crate`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

UNPUBLISHED = ["xtask", "sparsity-benches", "sparsity-fuzz"]
# A registry dependency's warning reads `warning: name@version: ...`; anything else is ours.
OURS = re.compile(r"^warning(?!: [A-Za-z0-9_-]+@[0-9])", re.M)


def run(cmd: list[str], **kw) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        sys.stdout.write(out)
        sys.exit(f"failed: {' '.join(cmd)}")
    return out


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target")).resolve()
    meta = json.loads(run(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=root))
    crates = {
        p["name"]: p
        for p in meta["packages"]
        if p["name"] not in UNPUBLISHED and p.get("publish") != []
    }
    excludes = [a for name in UNPUBLISHED for a in ("--exclude", name)]
    out = run(["cargo", "package", "--workspace", "--no-verify", "--allow-dirty", *excludes], cwd=root)
    # cargo notes that tests (kept out by the `include` lists: they need the repository's
    # fixtures) are not packaged; any other warning is a packaging problem.
    other = [l for l in out.splitlines() if l.startswith("warning") and "is not included in the published package" not in l]
    if other:
        sys.stdout.write(out)
        sys.exit("cargo package warned: " + "; ".join(other))

    profiles = (root / "Cargo.toml").read_text()
    profiles = profiles[profiles.index("[profile.") :]
    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        members, patches = [], []
        for name, pkg in sorted(crates.items()):
            crate = target / "package" / f"{name}-{pkg['version']}.crate"
            with tarfile.open(crate) as tar:
                files = [m for m in tar.getmembers() if m.isfile()]
                tar.extractall(ws, filter="data")
            # The unpacked files keep the archive's modification times, which can be older than
            # the check artifacts a previous run left in the shared target directory under the
            # same unit hash (it hashes the path relative to this scratch workspace, which is
            # the same every run): cargo would then reuse them. Dating every file now makes each
            # run check what was just packaged.
            for f in (ws / f"{name}-{pkg['version']}").rglob("*"):
                os.utime(f)
            sizes.append({"crate": name, "files": len(files), "bytes": crate.stat().st_size,
                          "unpacked_bytes": sum(m.size for m in files)})
            members.append(f"{name}-{pkg['version']}")
            patches.append(f'{name} = {{ path = "{name}-{pkg["version"]}" }}')
        (ws / "Cargo.toml").write_text(
            "[workspace]\nresolver = \"3\"\nmembers = [" + ", ".join(f'"{m}"' for m in members) + "]\n\n"
            "[patch.crates-io]\n" + "\n".join(patches) + "\n\n" + profiles
        )
        shutil.copy(root / "Cargo.lock", ws / "Cargo.lock")
        env = dict(os.environ, CARGO_TARGET_DIR=str(target))
        for name, pkg in sorted(crates.items()):
            variants = [[]]
            if pkg["features"].get("default"):
                variants.append(["--no-default-features"])
            for flags in variants:
                print(f"   checking packaged {name} alone {' '.join(flags)}".rstrip(), flush=True)
                out = run(["cargo", "check", "-p", name, "--lib", *flags], cwd=ws, env=env)
                if OURS.search(out):
                    sys.stdout.write(out)
                    sys.exit(f"warnings checking the packaged {name} alone {' '.join(flags)}")
    (target / "package" / "sizes.json").write_text(json.dumps(sizes, indent=1) + "\n")
    for s in sizes:
        print(f"   {s['crate']:<24} {s['files']:>3} files  {s['bytes'] / 1024:7.1f} KiB packed  {s['unpacked_bytes'] / 1024:7.1f} KiB")


if __name__ == "__main__":
    main()
