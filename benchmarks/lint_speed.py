"""How fast is `bnaudit check` on code written by others, against the floor of any libcst linter?

Runs the real CLI over the Python sources of the installed tensorflow, keras and tf_keras packages
(about 1.2 million lines), then measures, in the same run, the floor of a libcst linter on that
corpus: reading every file plus ``libcst.parse_module`` of the files that pass bnaudit's prefilter.
Prints files, lines, seconds, lines/s, findings (each one, to be accounted for) and the ratio.

    python benchmarks/lint_speed.py [--packages tensorflow keras tf_keras] [--jobs N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libcst

from bnaudit.source import prefilter
from bnaudit.source.discover import discover, module_name


def package_dirs(names: list[str]) -> list[Path]:
    dirs = []
    for name in names:
        spec = importlib.util.find_spec(name)  # locates without importing
        if spec is None or not spec.submodule_search_locations:
            sys.exit(f"package {name!r} is not installed")
        dirs.append(Path(next(iter(spec.submodule_search_locations))))
    return dirs


def floor(dirs: list[Path]) -> dict:
    """Read every file, prefilter, parse what passes: the least a libcst linter can do."""
    start = time.perf_counter()
    files = discover(dirs, []).files
    data = {str(path): path.read_bytes() for path in files}
    read = time.perf_counter() - start
    texts = {path: raw.decode("utf-8", "replace") for path, raw in data.items()}
    modules = {path: module_name(Path(path)) for path in data}
    selected = prefilter.select(texts, modules)
    start_parse = time.perf_counter()
    for path in selected:
        try:
            libcst.parse_module(data[path])
        except Exception:  # noqa: BLE001 - the floor only times the parse
            pass
    parse = time.perf_counter() - start_parse
    return {
        "files": len(data),
        "lines": sum(text.count("\n") for text in texts.values()),
        "selected_files": len(selected),
        "selected_lines": sum(texts[path].count("\n") for path in selected),
        "read_s": read,
        "parse_s": parse,
        "floor_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", nargs="+", default=["tensorflow", "keras", "tf_keras"])
    parser.add_argument("--jobs", type=int, default=0)
    args = parser.parse_args()
    dirs = package_dirs(args.packages)

    command = [sys.executable, "-m", "bnaudit", "check", "--format", "json", "--jobs", str(args.jobs)]
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, BNAUDIT_CACHE_DIR=cache)
        start = time.perf_counter()
        proc = subprocess.run([*command, *map(str, dirs)], capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - start
        if proc.returncode not in (0, 1):
            sys.exit(f"bnaudit failed ({proc.returncode}):\n{proc.stderr}")
        findings = json.loads(proc.stdout)
        # The same run again, with the facts cache the first run left (a pre-commit re-run).
        start = time.perf_counter()
        again = subprocess.run([*command, *map(str, dirs)], capture_output=True, text=True, env=env)
        warm = time.perf_counter() - start
        assert json.loads(again.stdout) == findings, "the cached run disagrees with the cold one"

    measured = floor(dirs)
    cores = args.jobs or os.cpu_count() or 1
    print(f"corpus: {', '.join(args.packages)} ({measured['files']} files, {measured['lines']:,} lines)")
    print(f"prefilter: {measured['selected_files']} files ({measured['selected_lines']:,} lines) parsed")
    print(f"bnaudit check: {elapsed:.1f} s, {measured['lines'] / elapsed:,.0f} lines/s, "
          f"{len(findings)} findings, {cores} worker processes")
    print(f"bnaudit check again with its facts cache: {warm:.1f} s")
    print(f"floor (read all + libcst.parse_module of the prefiltered files, one process): "
          f"{measured['floor_s']:.1f} s (read {measured['read_s']:.1f} s, parse {measured['parse_s']:.1f} s)")
    ideal = measured["read_s"] + measured["parse_s"] / cores
    print(f"ratio bnaudit / floor: {elapsed / measured['floor_s']:.2f} "
          f"(against the floor with the parse spread over {cores} cores: {elapsed / ideal:.2f})")
    for finding in findings:
        print(f"  {finding['path']}:{finding['line']}: {finding['code']} {finding['message']}")


if __name__ == "__main__":
    main()
