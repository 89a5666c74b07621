"""How fast is `bnaudit check` on code written by others, cold and as a pre-commit re-run?

Copies the Python sources of the installed tensorflow, keras and tf_keras packages (about 1.2 million
lines) to a temporary directory and runs the real CLI over the copy, then measures, in the same run:

- cold: ``bnaudit check --no-cache``;
- warm, nothing changed: a second run with the cache the first cached run left;
- warm, one file changed: the same after appending a function to one file that holds a batch norm;
- the read floor: finding and reading every file;
- the one-process floor: read every file, prefilter, ``libcst.parse_module`` of what passes;
- the all-core floor: the same with the parse spread over every core;
- growth: cold runs over 1 and 4 copies of the keras sources, and the exponent of time in size.

Prints each time, the ratios the targets are stated in, and every finding (each to be accounted for).

    python benchmarks/lint_speed.py [--packages tensorflow keras tf_keras] [--jobs N] [--no-growth]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import libcst

from bnaudit.source import prefilter
from bnaudit.source.discover import discover, module_name

EDITED = ("keras/src/layers/normalization/batch_normalization.py",)


def package_dirs(names: list[str]) -> list[Path]:
    dirs = []
    for name in names:
        spec = importlib.util.find_spec(name)  # locates without importing
        if spec is None or not spec.submodule_search_locations:
            sys.exit(f"package {name!r} is not installed")
        dirs.append(Path(next(iter(spec.submodule_search_locations))))
    return dirs


def copy_sources(dirs: list[Path], target: Path, copies: int = 1) -> list[Path]:
    out = []
    for copy in range(copies):
        for source in dirs:
            destination = target / f"copy{copy}" / source.name
            shutil.copytree(source, destination, ignore=_not_python)
            out.append(destination)
    return out


def _not_python(directory: str, names: list[str]) -> list[str]:
    return [name for name in names if not name.endswith(".py") and not os.path.isdir(os.path.join(directory, name))]


def _parse(raw: bytes) -> None:
    try:
        libcst.parse_module(raw)
    except Exception:  # noqa: BLE001 - the floor only times the parse
        pass


def floor(dirs: list[Path], cores: int) -> dict:
    """Read every file, prefilter, parse what passes: the least a libcst linter can do."""
    start = time.perf_counter()
    files = discover(dirs, []).files
    data = {str(path): path.read_bytes() for path in files}
    read = time.perf_counter() - start
    texts = {path: raw.decode("utf-8", "replace") for path, raw in data.items()}
    modules = {path: module_name(Path(path)) for path in data}
    start_filter = time.perf_counter()
    selected = sorted(prefilter.select(texts, modules))
    filtered = time.perf_counter() - start_filter
    start_parse = time.perf_counter()
    for path in selected:
        _parse(data[path])
    parse = time.perf_counter() - start_parse
    start_pool = time.perf_counter()
    with ProcessPoolExecutor(max_workers=cores) as pool:
        list(pool.map(_parse, [data[path] for path in selected], chunksize=4))
    parse_all_cores = time.perf_counter() - start_pool
    return {
        "files": len(data),
        "lines": sum(text.count("\n") for text in texts.values()),
        "selected": selected,
        "selected_lines": sum(texts[path].count("\n") for path in selected),
        "read_s": read,
        "one_process_s": read + filtered + parse,
        "all_cores_s": read + filtered + parse_all_cores,
    }


def run(command: list[str], env: dict) -> tuple[float, list]:
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"bnaudit failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed, json.loads(proc.stdout)


def growth(jobs: int, keras: Path, scratch: Path) -> list[tuple[int, int, float]]:
    """(copies, lines, cold seconds) for 1 and 4 copies of the keras sources."""
    out = []
    for copies in (1, 4):
        target = scratch / f"growth{copies}"
        dirs = copy_sources([keras], target, copies)
        lines = sum(path.read_bytes().count(b"\n") for d in dirs for path in d.rglob("*.py"))
        command = [sys.executable, "-m", "bnaudit", "check", "--no-cache", "--format", "json", "--jobs", str(jobs)]
        elapsed, _ = run([*command, *map(str, dirs)], dict(os.environ))
        out.append((copies, lines, elapsed))
        shutil.rmtree(target)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", nargs="+", default=["tensorflow", "keras", "tf_keras"])
    parser.add_argument("--jobs", type=int, default=0)
    parser.add_argument("--no-growth", action="store_true", help="skip the 1x/4x keras growth runs")
    args = parser.parse_args()
    cores = args.jobs or os.cpu_count() or 1

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        dirs = copy_sources(package_dirs(args.packages), scratch / "corpus")
        command = [sys.executable, "-m", "bnaudit", "check", "--format", "json", "--jobs", str(args.jobs),
                   *map(str, dirs)]
        env = dict(os.environ, BNAUDIT_CACHE_DIR=str(scratch / "cache"))
        cold, findings = run([*command[:4], "--no-cache", *command[4:]], env)
        first, cached = run(command, env)
        assert cached == findings, "the caching run disagrees with the --no-cache one"
        warm, again = run(command, env)
        assert again == findings, "the warm run disagrees with the cold one"
        measured = floor(dirs, cores)
        edited = next((scratch / "corpus" / "copy0" / name for name in EDITED
                       if (scratch / "corpus" / "copy0" / name).is_file()),
                      Path(next(p for p in measured["selected"] if "batch_norm" in p)))
        with open(edited, "a", encoding="utf-8") as handle:   # new code, so new facts
            handle.write("\n\ndef _edited_by_lint_speed(inputs):\n    return inputs\n")
        one_file, after_edit = run(command, env)
        assert after_edit == findings, "appending a function changed the findings"
        rows = [] if args.no_growth or "keras" not in args.packages else \
            growth(args.jobs, package_dirs(["keras"])[0], scratch)

    print(f"corpus: {', '.join(args.packages)} ({measured['files']} files, {measured['lines']:,} lines), "
          f"{cores} cores")
    print(f"prefilter: {len(measured['selected'])} files ({measured['selected_lines']:,} lines) parsed")
    print(f"findings: {len(findings)}")
    print()
    print("| run | seconds | against | ratio | target |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| cold (`--no-cache`) | {cold:.1f} | all-core floor {measured['all_cores_s']:.1f} s "
          f"| {cold / measured['all_cores_s']:.2f} | <= 1.3 |")
    print(f"| cold (`--no-cache`) | {cold:.1f} | one-process floor {measured['one_process_s']:.1f} s "
          f"| {cold / measured['one_process_s']:.2f} | <= 1.3 |")
    print(f"| first run, writing the cache | {first:.1f} | cold | {first / cold:.2f} | |")
    print(f"| warm, nothing changed | {warm:.2f} | read floor {measured['read_s']:.2f} s "
          f"| {warm / measured['read_s']:.2f} | <= 3 |")
    print(f"| warm, one file changed ({edited.name}) | {one_file:.1f} | cold | {one_file / cold:.2f} | <= 0.2 |")
    if rows:
        (c1, l1, t1), (c4, l4, t4) = rows
        exponent = math.log(t4 / t1) / math.log(l4 / l1)
        print(f"| growth, keras x{c1} ({l1:,} lines) -> x{c4} ({l4:,} lines) | {t1:.1f} -> {t4:.1f} "
              f"| | exponent {exponent:.2f} | <= 1.1 |")
    for finding in findings:
        print(f"  {finding['path']}:{finding['line']}: {finding['code']} {finding['message']}")


if __name__ == "__main__":
    main()
