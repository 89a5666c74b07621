"""`check --fix --unsafe-fixes` on the real-code corpus: what it fixes, and that it damages nothing.

    python benchmarks/fix_corpus.py MIRRORS_DIR [--manifest PATH] [--work DIR]

Each labelled repository is checked out as benchmarks/corpus_eval.py does, copied, and fixed as a
user would (`python -m bnaudit check --fix --unsafe-fixes --no-cache .` inside the copy).  Reports,
per code: the findings before, those with a fix (applied: safe/unsafe) or a suggestion
(display-only), what remains of that code after; the changed files and how many of them Python
still compiles; then whether a second `--fix` changed anything, and the notes of fixes left out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_eval import checkout, load_manifest  # noqa: E402


def _check(tree: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnaudit", "check", "--no-cache", *extra, "."], cwd=tree,
                          capture_output=True, text=True)


def _findings(tree: Path) -> list[dict]:
    proc = _check(tree, "--format", "json")
    return json.loads(proc.stdout or "[]") if proc.returncode in (0, 1) else []


def _snapshot(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in tree.rglob("*.py") if p.is_file()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mirrors", type=Path)
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "bnaudit-corpus")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", SyntaxWarning)   # the corpus's own `x is not 0`, seen by compile()
    manifest = load_manifest(args.manifest, None)
    commits = {r["repo"]: r["commit"] for r in manifest["repositories"]}
    before: Counter = Counter()
    with_fix: Counter = Counter()
    shown: Counter = Counter()
    after: Counter = Counter()
    changed = compiled = 0
    idempotent = True
    notes: list[str] = []
    seconds = 0.0
    for repo in sorted({f["repo"] for f in manifest["files"]}):
        source = checkout(args.mirrors, repo, commits[repo], args.work)
        with tempfile.TemporaryDirectory(prefix="bnaudit-fix-corpus-") as scratch:
            tree = Path(scratch) / "tree"
            shutil.copytree(source, tree, symlinks=True)
            found = _findings(tree)
            for finding in found:
                before[finding["code"]] += 1
                applicability = (finding.get("autofix") or {}).get("applicability")
                if applicability in ("safe", "unsafe"):
                    with_fix[finding["code"]] += 1
                elif applicability == "display-only":
                    shown[finding["code"]] += 1
            original = _snapshot(tree)
            start = time.perf_counter()
            proc = _check(tree, "--fix", "--unsafe-fixes", "--format", "json")
            seconds += time.perf_counter() - start
            notes += [f"{repo}: {line}" for line in proc.stderr.splitlines()
                      if "not fixed" in line or "dropped" in line]
            remaining = json.loads(proc.stdout or "[]")
            for finding in remaining:
                after[finding["code"]] += 1
            now = _snapshot(tree)
            for path, text in now.items():
                if original.get(path) != text:
                    changed += 1
                    try:
                        compile(text, path, "exec", dont_inherit=True)
                        compiled += 1
                    except (SyntaxError, ValueError) as exc:
                        notes.append(f"{repo}: {path} does not compile once fixed: {exc}")
            _check(tree, "--fix", "--unsafe-fixes")
            if _snapshot(tree) != now:
                idempotent = False
                notes.append(f"{repo}: a second --fix changed the files again")
    print("| code | findings | with a fix | suggestions | remaining after --fix |")
    print("| --- | --- | --- | --- | --- |")
    for code in sorted(before):
        print(f"| {code} | {before[code]} | {with_fix[code]} | {shown[code]} | {after[code]} |")
    total_fixable = sum(with_fix.values())
    print(f"\nfindings {sum(before.values())}, with a fix {total_fixable}, remaining {sum(after.values())}; "
          f"files changed {changed}, compiling {compiled}; second --fix a no-op: {idempotent}; "
          f"--fix took {seconds:.1f} s over {len(commits)} repositories")
    for note in notes:
        print(f"  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
