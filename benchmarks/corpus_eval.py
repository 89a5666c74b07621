"""Precision and recall of `bnaudit check` on the real-code corpus (benchmarks/corpus/manifest.json).

    python benchmarks/corpus_eval.py MIRRORS_DIR [--manifest PATH | --labels DIR] [--source TREE]

MIRRORS_DIR holds the repositories as the search tool's `fetch` brings them (`owner+name/repo`, a
git directory or a clone).  Each labelled repository's Python files are checked out at the recorded
commit into a work directory, and the whole checkout is linted as a user would (`python -m bnaudit
check --format json --no-cache .` inside it).  Only labelled files are scored; a labelled file is
labelled exhaustively (benchmarks/corpus/LABELLING.md), so a finding in it that matches no label is
a false positive, and a label that no finding of its code overlaps is a miss.

`--source TREE` lints with the bnaudit package found in another source tree (a worktree of an older
commit, say), to measure a change against its starting point.  Prints the per-code table, every false
positive and every miss with its `path:line`, and a last line `precision P recall R`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCORED = {f"BN{n:03d}" for n in range(0, 13)} - {"BN010", "BN012"}


def load_manifest(manifest: Path | None, labels: Path | None) -> dict:
    if labels is not None:
        merged: dict = {"repositories": [], "files": []}
        seen = set()
        for part in sorted(labels.glob("*.json")):
            data = json.loads(part.read_text())
            for repo in data.get("repositories", []):
                if repo["repo"] not in seen:
                    seen.add(repo["repo"])
                    merged["repositories"].append(repo)
            merged["files"].extend(data.get("files", []))
        return merged
    return json.loads((manifest or HERE / "corpus" / "manifest.json").read_text())


def git_dir(mirrors: Path, repo: str) -> Path:
    root = mirrors / repo.replace("/", "+") / "repo"
    return root / ".git" if (root / ".git").is_dir() else root


def checkout(mirrors: Path, repo: str, commit: str, work: Path) -> Path:
    """The repository's *.py files at ``commit`` under ``work`` (files the snapshot lacks are skipped)."""
    dest = work / f"{repo.replace('/', '+')}@{commit[:12]}"
    done = dest / ".bnaudit-corpus-complete"
    if done.exists():
        return dest
    gd = str(git_dir(mirrors, repo))
    listing = subprocess.run(["git", "--git-dir", gd, "ls-tree", "-r", "-z", commit], check=True,
                             capture_output=True).stdout.split(b"\0")
    wanted = []
    for entry in filter(None, listing):
        meta, _, raw_path = entry.partition(b"\t")
        mode, kind, sha = meta.split()
        path = raw_path.decode("utf-8", "surrogateescape")
        if kind == b"blob" and mode != b"120000" and path.endswith(".py"):
            wanted.append((sha.decode(), path))
    proc = subprocess.Popen(["git", "--git-dir", gd, "cat-file", "--batch"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)

    def feed() -> None:
        assert proc.stdin is not None
        proc.stdin.write("".join(f"{sha}\n" for sha, _ in wanted).encode())
        proc.stdin.close()

    threading.Thread(target=feed, daemon=True).start()
    assert proc.stdout is not None
    for _sha, path in wanted:
        header = proc.stdout.readline().split()
        if len(header) < 3 or header[1] == b"missing":
            continue
        data = proc.stdout.read(int(header[2]))
        proc.stdout.read(1)
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    proc.wait()
    dest.mkdir(parents=True, exist_ok=True)
    done.write_text(commit)
    return dest


def lint(tree: Path, source: Path | None) -> tuple[list[dict], float, str]:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bnaudit", "check", "--format", "json", "--no-cache", "."],
                          cwd=tree, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        return [], elapsed, proc.stderr.strip()
    return json.loads(proc.stdout or "[]"), elapsed, proc.stderr.strip()


def overlaps(finding: dict, lines: list[int]) -> bool:
    start = finding["line"] or 0
    end = finding.get("end_line") or start
    return any(start <= line <= end for line in lines)


def score(manifest: dict, findings: dict[str, list[dict]]) -> dict:
    """Per code: labels, detected, findings that hit a label, false positives; and the lists."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: {"labels": 0, "detected": 0, "hits": 0, "fp": 0})
    false_positives, misses = [], []
    for entry in manifest["files"]:
        repo, path = entry["repo"], entry["path"]
        found = [f for f in findings.get(repo, []) if Path(f["path"]).as_posix() == path and f["code"] in SCORED]
        labels = entry.get("faults", [])
        ignored = set(entry.get("ignore_lines", []))
        for label in labels:
            table[label["code"]]["labels"] += 1
            if any(f["code"] == label["code"] and overlaps(f, label["lines"]) for f in found):
                table[label["code"]]["detected"] += 1
            else:
                misses.append((repo, path, label))
        for finding in found:
            if any(finding["code"] == label["code"] and overlaps(finding, label["lines"]) for label in labels):
                table[finding["code"]]["hits"] += 1
            elif not overlaps(finding, sorted(ignored)):
                table[finding["code"]]["fp"] += 1
                false_positives.append((repo, finding))
    return {"table": dict(table), "false_positives": false_positives, "misses": misses}


def ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}" if b else "-"


def report(manifest: dict, result: dict, timings: dict[str, float]) -> str:
    table = result["table"]
    files = manifest["files"]
    lines = [f"{len(files)} labelled files ({sum(1 for f in files if not f.get('faults'))} clean) from "
             f"{len({f['repo'] for f in files})} repositories; linted in {sum(timings.values()):.1f} s", ""]
    lines.append(f"{'code':<6} {'labels':>6} {'found':>6} {'recall':>7} {'findings':>9} {'false+':>7} {'precision':>10}")
    total = {"labels": 0, "detected": 0, "hits": 0, "fp": 0}
    for code in sorted(table):
        row = table[code]
        for key in total:
            total[key] += row[key]
        lines.append(f"{code:<6} {row['labels']:>6} {row['detected']:>6} {ratio(row['detected'], row['labels']):>7} "
                     f"{row['hits'] + row['fp']:>9} {row['fp']:>7} {ratio(row['hits'], row['hits'] + row['fp']):>10}")
    lines.append(f"{'all':<6} {total['labels']:>6} {total['detected']:>6} {ratio(total['detected'], total['labels']):>7} "
                 f"{total['hits'] + total['fp']:>9} {total['fp']:>7} {ratio(total['hits'], total['hits'] + total['fp']):>10}")
    lines += ["", f"false positives ({len(result['false_positives'])}):"]
    for repo, finding in sorted(result["false_positives"], key=lambda p: (p[0], p[1]["path"], p[1]["line"])):
        lines.append(f"  {repo}: {finding['path']}:{finding['line']}: {finding['code']} {finding['message'][:140]}")
    lines += ["", f"misses ({len(result['misses'])}):"]
    for repo, path, label in sorted(result["misses"], key=lambda m: (m[0], m[1], m[2]["lines"])):
        lines.append(f"  {repo}: {path}:{label['lines'][0]}: {label['code']} {label.get('why', '')[:140]}")
    precision = ratio(total["hits"], total["hits"] + total["fp"])
    recall = ratio(total["detected"], total["labels"])
    lines += ["", f"precision {precision} recall {recall}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mirrors", type=Path, help="directory of fetched snapshots (owner+name/repo)")
    parser.add_argument("--manifest", type=Path, help="default: benchmarks/corpus/manifest.json")
    parser.add_argument("--labels", type=Path, help="merge every labels file in this directory instead")
    parser.add_argument("--source", type=Path, help="lint with the bnaudit package in this source tree")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "bnaudit-corpus",
                        help="where checkouts are made (reused between runs)")
    parser.add_argument("--json", type=Path, help="also write the findings and the score here")
    parser.add_argument("--repo", action="append", help="only these repositories (owner/name)")
    args = parser.parse_args(argv)

    manifest = load_manifest(args.manifest, args.labels)
    if args.repo:
        manifest["files"] = [f for f in manifest["files"] if f["repo"] in args.repo]
    commits = {r["repo"]: r["commit"] for r in manifest["repositories"]}
    findings: dict[str, list[dict]] = {}
    timings: dict[str, float] = {}
    for repo in sorted({f["repo"] for f in manifest["files"]}):
        tree = checkout(args.mirrors, repo, commits[repo], args.work)
        findings[repo], timings[repo], errors = lint(tree, args.source)
        if errors:
            print(f"{repo}: {errors.splitlines()[-1][:200]}", file=sys.stderr)
    result = score(manifest, findings)
    print(report(manifest, result, timings))
    if args.json:
        args.json.write_text(json.dumps({"findings": findings, "table": result["table"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
