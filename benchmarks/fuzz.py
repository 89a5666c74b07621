"""The long fuzz campaign: generated programs, mutated fixtures, hostile sources, corrupted artifacts.

Every case runs in a real `python -m bnaudit` process (batches of files or artifacts per process,
each under an address-space limit and a timeout), so a segfault, a hang or a runaway allocation
counts as what it is.  A batch that fails is re-run one case at a time to name the culprit.

    python3 benchmarks/fuzz.py                       # 10,000 programs, 5,000 mutants, 1,000 artifacts
    python3 benchmarks/fuzz.py --programs 500 --mutants 500 --artifacts 100 --json /tmp/fuzz.json

The table counts, per campaign: crashes (killed by a signal), hangs (timeouts), tracebacks, wrong
exit codes (check: 0/1, or 2 only with an error line; graph: 0/1/2), internal errors and the generic
"could not be audited" catch-all (a damaged input deserves a specific message), missed detections
(a NaN or negative variance written into a valid artifact and reported clean), and the peak memory
of any one process.  All zeros is the bar.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "fixtures" / "scripts").glob("*.py"))
PREFIX = "import tensorflow as tf\nh = tf.compat.v1.layers.batch_normalization(x, training=True)\n"
ADDRESS_SPACE = 24 * 2 ** 30   # per bnaudit process: TensorFlow alone maps several GB of address space
BATCH_FILES, BATCH_ARTIFACTS = 250, 40

HOSTILE = [
    "z = " + "(" * 5000 + "1" + ")" * 5000, "z = " + "[" * 300 + "]" * 300, "z = " + "{1: " * 400 + "1" + "}" * 400,
    "z = " + "+".join(["1"] * 50000), "z = a" + ".b" * 8000, "z = a" + "[0]" * 8000, "z = f" + "()" * 8000,
    "z = " + "lambda: " * 3000 + "1", "z = " + "not " * 5000 + "x", "z = " + "-" * 5000 + "1",
    "z = ((9 ** 63) ** 63) ** 63 ** 63", "z = 10 ** 10 ** 10", "z = 2 ** 2 ** 2 ** 2 ** 2 ** 2",
    "z = '\\N{NOT A NAME}'", "z = '\\x4'", "z = b'é'", "z = 1e999999", "z = range(10 ** 20)",
    "z = [" + ", ".join(map(str, range(100000))) + "]", "z = '" + "(" * 100000 + "'",
    "if x:\n" + "".join(" " * i + "if x:\n" for i in range(1, 100)) + " " * 100 + "pass",
    "def f(" + ", ".join(f"a{i}" for i in range(5000)) + "): pass",
    "x = y = " * 2000 + "1", "\t\tz = 1", "z = 1 \\\n" * 3000 + "+ 1", "\x0c" * 1000 + "z = 1",
]


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def bnaudit(args: list[str], timeout: float) -> tuple[int | None, str, str, float]:
    """(exit code, or None on a timeout; stdout; stderr; seconds)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "bnaudit", *args], capture_output=True, text=True,
                              timeout=timeout, env=env, preexec_fn=limit_memory)
    except subprocess.TimeoutExpired:
        return None, "", "", time.monotonic() - start
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


class Tally:
    FIELDS = ("cases", "crashes", "hangs", "tracebacks", "wrong exit", "internal errors", "catch-all",
              "missed", "peak MB")

    def __init__(self, name: str):
        self.name = name
        self.counts = dict.fromkeys(self.FIELDS, 0)
        self.examples: list[str] = []

    def bad(self, field: str, example: str) -> None:
        self.counts[field] += 1
        if len(self.examples) < 12:
            self.examples.append(f"{field}: {example}"[:300])


def _judge(tally: Tally, kind: str, code, out: str, err: str, name: str) -> bool:
    """Count what is wrong with one run; True when it is clean."""
    if code is None:
        tally.bad("hangs", name)
        return False
    if code < 0 or code >= 128:
        tally.bad("crashes", f"{name} (exit {code})")
        return False
    ok = True
    if "Traceback" in err:
        tally.bad("tracebacks", f"{name}: {err.strip().splitlines()[-1]}")
        ok = False
    if "internal error" in err:
        tally.bad("internal errors", f"{name}: {err.strip().splitlines()[0]}")
        ok = False
    if "could not be audited" in err:
        tally.bad("catch-all", f"{name}: {err.strip().splitlines()[0]}")
        ok = False
    allowed = {0, 1, 2} if kind == "graph" else {0, 1}
    if code not in allowed and not (kind == "check" and code == 2 and "bnaudit: error:" in err):
        tally.bad("wrong exit", f"{name} (exit {code})")
        ok = False
    return ok


def run_files(tally: Tally, sources: list[tuple[str, bytes]], timeout: float) -> None:
    """`bnaudit check` over the sources in batches; a failing batch is re-run file by file."""
    for start in range(0, len(sources), BATCH_FILES):
        batch = sources[start:start + BATCH_FILES]
        with tempfile.TemporaryDirectory(prefix="bnaudit-fuzz-") as directory:
            paths = []
            for index, (name, data) in enumerate(batch):
                path = Path(directory) / f"c{index:04}_{name}"
                path.write_bytes(data)
                paths.append(path)
            code, out, err, _ = bnaudit(["check", "--no-cache", "--format", "json", directory], timeout * len(batch))
            probe = Tally("probe")
            if _judge(probe, "check", code, out, err, "batch"):
                tally.counts["cases"] += len(batch)
                continue
            for path in paths:
                code, out, err, _ = bnaudit(["check", "--no-cache", "--format", "json", str(path)], timeout)
                tally.counts["cases"] += 1
                _judge(tally, "check", code, out, err, path.name)
    tally.counts["peak MB"] = max(tally.counts["peak MB"], _peak_mb())


def _peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024


def generated_programs(count: int, seed: int) -> list[tuple[str, bytes]]:
    import hypothesmith
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed

    found: list[str] = []

    @hypothesis_seed(seed)
    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(hypothesmith.from_grammar())
    def collect(source):
        found.append(source)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hypothesmith compiles what it generates: SyntaxWarnings by the thousand
        collect()
    return [(f"gen{i}.py", (PREFIX + source).encode("utf-8", "surrogatepass")) for i, source in enumerate(found)]


def mutants(count: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        fixture = rng.choice(FIXTURES)
        data = fixture.read_bytes()
        change = rng.choice(["hostile", "truncate", "nul", "bom", "crlf", "latin-1", "swap", "delete"])
        lines = data.split(b"\n")
        at = rng.randrange(len(lines))
        if change == "hostile":
            lines.insert(at, rng.choice(HOSTILE).encode("utf-8"))
            data = b"\n".join(lines)
        elif change == "truncate":
            data = data[:rng.randrange(len(data))]
        elif change == "nul":
            cut = rng.randrange(len(data))
            data = data[:cut] + b"\0" + data[cut:]
        elif change == "bom":
            data = b"\xef\xbb\xbf" + data
        elif change == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif change == "latin-1":
            data = b"# -*- coding: latin-1 -*-\n" + data.decode("utf-8").encode("latin-1", "replace") + b"\n# \xe9"
        elif change == "swap":
            other = rng.randrange(len(lines))
            lines[at], lines[other] = lines[other], lines[at]
            data = b"\n".join(lines)
        else:
            del lines[at]
            data = b"\n".join(lines)
        out.append((f"mut{index}_{fixture.name}", data))
    return out


WRITE_ARTIFACTS = textwrap.dedent("""
    import os, sys
    import numpy as np, keras, tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    out = sys.argv[1]
    inputs = keras.Input((4, 4, 3))
    h = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 1, name="conv")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    model.compile("sgd", "mse")
    model.fit(np.random.rand(64, 4, 4, 3), np.random.rand(64, 2), epochs=2, verbose=0)
    model.save(os.path.join(out, "m.keras")); model.save(os.path.join(out, "m.h5"))
    model.save_weights(os.path.join(out, "m.weights.h5"))
    model.export(os.path.join(out, "export"), verbose=False)
    tf.train.Checkpoint(model=model).write(os.path.join(out, "ckpt", "ckpt"))
    f = tf.function(lambda t: model(t, training=False)).get_concrete_function(tf.TensorSpec([None, 4, 4, 3]))
    tf.io.write_graph(convert_variables_to_constants_v2(f).graph.as_graph_def(), out, "m.pb", as_text=False)
""")
# member to corrupt -> what to hand to `bnaudit graph` (relative to the copy)
ARTIFACT_MEMBERS = {
    "m.keras": "m.keras", "m.h5": "m.h5", "m.weights.h5": "m.weights.h5", "m.pb": "m.pb",
    "ckpt/ckpt.index": "ckpt/ckpt", "ckpt/ckpt.data-00000-of-00001": "ckpt/ckpt",
    "export/saved_model.pb": "export", "export/variables/variables.index": "export",
    "export/variables/variables.data-00000-of-00001": "export",
}


def corrupted_artifacts(tally: Tally, missed: Tally, count: int, seed: int, timeout: float) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bnaudit-fuzz-art-") as base:
        clean = Path(base) / "clean"
        clean.mkdir()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        subprocess.run([sys.executable, "-c", WRITE_ARTIFACTS, str(clean)], check=True, capture_output=True,
                       env=env, timeout=600)
        cases = []
        for index in range(count):
            member = rng.choice(sorted(ARTIFACT_MEMBERS))
            copy = Path(base) / f"a{index:05}"
            target_dir = copy / Path(member).parent
            target_dir.mkdir(parents=True, exist_ok=True)
            # Copy only what the audited artifact needs.
            audited = ARTIFACT_MEMBERS[member]
            source = clean / audited
            if source.is_dir():
                shutil.copytree(source, copy / audited, dirs_exist_ok=True)
            elif member.startswith("ckpt/"):
                shutil.copytree(clean / "ckpt", copy / "ckpt", dirs_exist_ok=True)
            else:
                shutil.copy(source, copy / audited)
            path = copy / member
            data = bytearray(path.read_bytes())
            how = rng.choice(["flip", "flips", "truncate", "zero", "garbage"])
            at = rng.randrange(max(len(data), 1))
            if how == "flip":
                data[at] ^= 1 << rng.randrange(8)
            elif how == "flips":
                for _ in range(rng.randrange(2, 32)):
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            elif how == "truncate":
                data = data[:at]
            elif how == "zero":
                end = at + rng.randrange(1, 4096)
                data[at:end] = bytes(len(data[at:end]))
            else:
                data[at:at + 64] = bytes(rng.randrange(256) for _ in range(64))
            path.write_bytes(bytes(data))
            cases.append((f"{member} {how}@{at}", str(copy / audited)))
        _run_graph(tally, cases, timeout)
        _missed_detections(missed, clean, Path(base), rng, max(count // 10, 10), timeout)
    tally.counts["peak MB"] = max(tally.counts["peak MB"], _peak_mb())
    missed.counts["peak MB"] = tally.counts["peak MB"]


def _run_graph(tally: Tally, cases: list[tuple[str, str]], timeout: float) -> None:
    for start in range(0, len(cases), BATCH_ARTIFACTS):
        batch = cases[start:start + BATCH_ARTIFACTS]
        code, out, err, _ = bnaudit(["graph", "--format", "json-report", *[path for _, path in batch]],
                                    timeout + 5 * len(batch))
        probe = Tally("probe")
        if _judge(probe, "graph", code, out, err, "batch"):
            tally.counts["cases"] += len(batch)
            continue
        for name, path in batch:
            code, out, err, _ = bnaudit(["graph", "--format", "json", path], timeout)
            tally.counts["cases"] += 1
            _judge(tally, "graph", code, out, err, name)


def _missed_detections(tally: Tally, clean: Path, base: Path, rng: random.Random, count: int, timeout: float) -> None:
    """A NaN or a negative variance written with valid checksums (through h5py) must be found."""
    import h5py
    import numpy as np

    for index in range(count):
        target = base / f"value{index}.h5"
        shutil.copy(clean / rng.choice(["m.h5", "m.weights.h5"]), target)
        fault = rng.choice(["nan", "negative", "inf"])
        with h5py.File(target, "r+") as h5:
            names = []
            h5.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset)
                          and obj.shape == (4,) and ("bn/" in name or "batch_normalization/" in name) else None)
            name = rng.choice(sorted(names))
            value = h5[name][()]
            value[rng.randrange(4)] = {"nan": np.nan, "inf": np.inf, "negative": -2.0}[fault]
            h5[name][...] = value
        code, out, err, _ = bnaudit(["graph", "--format", "json", str(target)], timeout)
        tally.counts["cases"] += 1
        if not _judge(tally, "graph", code, out, err, target.name):
            continue
        codes = {finding["code"] for finding in json.loads(out or "[]")}
        variance = name.endswith(("moving_variance", "vars/3"))  # Keras 3 keeps the variance fourth
        expected = "BN005" if fault == "negative" else "BN012"
        if fault == "negative" and not variance:
            continue  # a negative mean, gamma or beta is a legal value
        if expected not in codes:
            tally.bad("missed", f"{fault} in {name} of {target.name}: reported {sorted(codes) or 'clean'}")


def _progress(tally: Tally, started: float) -> None:
    """One campaign's counts on stderr as soon as it ends (a long run stopped early keeps them)."""
    counts = ", ".join(f"{field} {value}" for field, value in tally.counts.items())
    print(f"{tally.name}: {counts} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    for example in tally.examples:
        print(f"  {example}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=10_000)
    parser.add_argument("--mutants", type=int, default=5_000)
    parser.add_argument("--artifacts", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case run alone")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tallies = []
    started = time.monotonic()
    for name, count, make in (
            ("generated programs", args.programs, lambda: generated_programs(args.programs, args.seed)),
            ("mutated fixtures", args.mutants, lambda: mutants(args.mutants, args.seed)),
            ("hostile sources", len(HOSTILE), lambda: [(f"hostile{i}.py", (PREFIX + text + "\n").encode())
                                                       for i, text in enumerate(HOSTILE)])):
        if not count:
            continue
        tally = Tally(name)
        sources = make()
        run_files(tally, sources, args.timeout)
        tallies.append(tally)
        _progress(tally, started)
    if args.artifacts:
        corrupted, missed = Tally("corrupted artifacts"), Tally("values injected with valid checksums")
        corrupted_artifacts(corrupted, missed, args.artifacts, args.seed, args.timeout)
        tallies += [corrupted, missed]
        _progress(corrupted, started)
        _progress(missed, started)
    print("| campaign | " + " | ".join(Tally.FIELDS) + " |")
    print("|---" * (len(Tally.FIELDS) + 1) + "|")
    for tally in tallies:
        print(f"| {tally.name} | " + " | ".join(str(tally.counts[field]) for field in Tally.FIELDS) + " |")
    for tally in tallies:
        for example in tally.examples:
            print(f"  {tally.name}: {example}")
    print(f"\n{time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({t.name: {"counts": t.counts, "examples": t.examples} for t in tallies},
                                        indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
