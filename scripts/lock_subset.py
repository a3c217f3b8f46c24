"""Print the entries of the lock file that a set of packages needs, hashes included.

One lock (services/api/requirements.lock, pip-compile --generate-hashes) pins everything
the venv installs: the runtime and the dev tools. The api image must install exactly the
same pins but not the dev tools, and pip cannot take hashes from a constraints file, so
this script cuts the lock down to the closure of the packages asked for, following the
"# via" lines pip-compile writes. A package whose every "via" parent is outside the
closure is left out.

usage: python scripts/lock_subset.py LOCK --runtime PYPROJECT   # [project.dependencies]
       python scripts/lock_subset.py LOCK NAME...                # those packages
Standard library only: it runs in the image's build stage before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(lock_text: str) -> dict[str, tuple[str, set[str]]]:
    """name -> (the entry's text, names of the packages it is there for)."""
    entries: dict[str, tuple[str, set[str]]] = {}
    name = ""
    lines: list[str] = []
    parents: set[str] = set()
    in_via = False

    def flush() -> None:
        if name:
            entries[name] = ("\n".join(lines) + "\n", parents)

    for line in lock_text.splitlines():
        if line and not line.startswith((" ", "#")):
            flush()
            match = _NAME.match(line)
            assert match, line
            name, lines, parents, in_via = canonical(match.group(1)), [line], set(), False
        elif line.startswith("    --hash="):
            lines.append(line)
        elif line.startswith("    # via"):
            rest = line[len("    # via") :].strip()
            in_via = not rest
            if rest:
                parents.add(canonical(rest.split()[0]))
        elif in_via and line.startswith("    #   "):
            parents.add(canonical(line.strip("# ").split()[0]))
    flush()
    return entries


def closure(entries: dict[str, tuple[str, set[str]]], roots: set[str]) -> list[str]:
    missing = roots - entries.keys()
    if missing:
        raise SystemExit(f"not in the lock: {', '.join(sorted(missing))} (run `make lock`)")
    wanted = set(roots)
    changed = True
    while changed:  # a fixpoint: the lock is small (~100 entries)
        changed = False
        for name, (_, parents) in entries.items():
            if name not in wanted and parents & wanted:
                wanted.add(name)
                changed = True
    return [entries[name][0] for name in entries if name in wanted]


def runtime_roots(pyproject: Path) -> set[str]:
    data = tomllib.loads(pyproject.read_text())
    requires = [*data["project"]["dependencies"], *data["build-system"]["requires"]]
    return {canonical(_NAME.match(r).group(1)) for r in requires}  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("names", nargs="*")
    parser.add_argument("--runtime", type=Path, metavar="PYPROJECT")
    args = parser.parse_args(argv)
    roots = {canonical(n) for n in args.names}
    if args.runtime:
        roots |= runtime_roots(args.runtime)
    if not roots:
        parser.error("name packages, or --runtime PYPROJECT")
    sys.stdout.write("".join(closure(parse(args.lock.read_text()), roots)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
