"""Structure limits of the package: no module over 600 lines, no function over 80 lines.

    python scripts/check_structure.py [--max-file-lines 600] [--max-function-lines 80] [PATH ...]

Counts physical lines (docstrings and comments included: a reader has to read
them too). Exits 1 and lists every offender; `.ci/run` runs it before the tests.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def offenders(paths: list[Path], max_file: int, max_function: int) -> list[str]:
    out = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        if n > max_file:
            out.append(f"{name}: {n} lines (limit {max_file})")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = node.end_lineno - start + 1
                if length > max_function:
                    out.append(f"{name}:{node.lineno} {node.name}(): {length} lines (limit {max_function})")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", type=Path, default=[ROOT / "metanas"])
    p.add_argument("--max-file-lines", type=int, default=600)
    p.add_argument("--max-function-lines", type=int, default=80)
    args = p.parse_args()
    files = sorted(f for path in args.paths for f in ([path] if path.is_file() else path.rglob("*.py")))
    found = offenders(files, args.max_file_lines, args.max_function_lines)
    for line in found:
        print(line)
    print(f"check_structure: {len(files)} files, {len(found)} over the limits")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
