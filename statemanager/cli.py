"""The ``chronicle`` command (grows verb by verb; see README)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from .commands import run

    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
