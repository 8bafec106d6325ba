"""Write requirements-ci.lock: the exact versions, in the running environment, of every
distribution that ``bayes_animal[test]`` needs (its dependency closure, markers evaluated here).

``make lock`` runs it in the .venv that ``make test`` built; ``make test`` then installs with
``pip install -c requirements-ci.lock -e '.[test]'``, so CI tests what was tested here, and a
release of a dependency cannot break CI unannounced. To move the pins forward, remove the file
and the environment (``rm requirements-ci.lock; make clean``), then ``make lock`` (it installs
the newest versions pyproject.toml allows) and ``make test``.

Usage: ``python .ci/lock.py [OUTPUT]`` (default: requirements-ci.lock beside pyproject.toml).
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("test",)
"""The extras whose closure is locked (with the core dependencies)."""


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether a requirement holds here, for a distribution asked for with ``extras``."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras or {""})


def closure(roots: list[Requirement]) -> dict[str, str]:
    """Canonical name → installed version of every distribution the roots need.

    Raises
    ------
    SystemExit
        A needed distribution is not installed in this environment (build it with
        ``make test`` first).
    """
    versions: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [(r, {""}) for r in roots]
    while pending:
        requirement, context = pending.pop()
        if not _applies(requirement, context):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(
                f"{requirement.name} (needed by bayes_animal[{','.join(EXTRAS)}]) is not "
                "installed here: run `make test` to build the environment, then `make lock`."
            ) from None
        versions[name] = distribution.version
        asked = set(requirement.extras)
        for text in distribution.requires or []:
            pending.append((Requirement(text), asked))
    return versions


def main(argv: list[str]) -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    roots = [Requirement(r) for r in project["dependencies"]]
    for extra in EXTRAS:
        roots += [Requirement(r) for r in project["optional-dependencies"][extra]]
    versions = closure(roots)
    target = Path(argv[0]) if argv else ROOT / "requirements-ci.lock"
    python = ".".join(map(str, sys.version_info[:2]))
    lines = [
        "# The exact versions `make test` installs (pip install -c requirements-ci.lock "
        "-e '.[test]'):",
        f"# bayes_animal[{','.join(EXTRAS)}]'s dependency closure as tested, Python {python} on "
        f"{sys.platform}.",
        "# Written by `make lock` (.ci/lock.py); regenerate it to move the pins forward.",
        *(f"{name}=={versions[name]}" for name in sorted(versions)),
    ]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(versions)} pins to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
