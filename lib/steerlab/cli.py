"""Command line: ``python -m steerlab.cli provision|run-notebooks|demo``."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steerlab")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("provision", help="de-quantize the embedded model into the cache (once)")
    args = parser.parse_args(argv)
    if args.command == "provision":
        from .models import provision_embedded

        print(f"embedded model checkpoint: {provision_embedded()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
