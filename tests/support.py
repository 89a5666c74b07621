"""Helpers shared by the source-analyzer tests."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from bnaudit.source import analyze

EXPECT_RE = re.compile(r"#\s*expect:\s*(BN\d{3}(?:\s*,\s*BN\d{3})*)")


def expectations(text: str) -> list[tuple[str, int]]:
    """The (code, line) pairs that `# expect: BN001, BN009` comments ask for."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = EXPECT_RE.search(line)
        if match:
            found.extend((code.strip(), number) for code in match.group(1).split(","))
    return sorted(found)


def normalize(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def check_text(tmp_path: Path, text: str, name: str = "example.py") -> list[tuple[str, int]]:
    """Run the analyzer on one snippet and return the sorted (code, line) pairs."""
    path = tmp_path / name
    path.write_text(normalize(text), encoding="utf-8")
    result = analyze([path])
    return sorted((finding.code, finding.line) for finding in result.findings)


def code_blocks(markdown: str, tag: str) -> list[str]:
    """Fenced blocks opened with ```python <tag>."""
    return re.findall(rf"^```python {re.escape(tag)}\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)


def run_on_terminal(command: list[str], stream: str, **kwargs) -> tuple[int, str]:
    """Run ``command`` with its ``stream`` ("stdout" or "stderr") on a pseudo-terminal: (exit code, what it wrote)."""
    import os
    import pty
    import subprocess

    master, slave = pty.openpty()
    try:
        other = "stderr" if stream == "stdout" else "stdout"
        proc = subprocess.run(command, **{stream: slave, other: subprocess.PIPE}, timeout=300, **kwargs)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end is closed: everything was read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    return proc.returncode, seen.decode()
