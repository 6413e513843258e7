"""Command line for the Makefile: ``python -m steerlab.cli provision | run-notebooks``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steerlab")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("provision", help="de-quantize the embedded model into the cache (once)")
    run = sub.add_parser("run-notebooks", help="execute notebooks with papermill into runs/<timestamp>/")
    run.add_argument("--only", nargs="*", type=Path, help="notebook paths (default: all, in order)")
    run.add_argument("--params", type=Path, help="YAML file of parameters for the notebooks")
    run.add_argument("--model", help="model name or path for every notebook (model_name parameter)")
    run.add_argument("--runs-root", type=Path, help="where run folders go (default runs/)")
    args = parser.parse_args(argv)
    if args.command == "provision":
        from .models import provision_embedded

        print(f"embedded model checkpoint: {provision_embedded()}")
        return 0
    import yaml

    from .runner import run_notebooks

    params: dict[str, object] = {}
    if args.params:
        loaded = yaml.safe_load(args.params.read_text())
        if not isinstance(loaded, dict):
            parser.error(f"{args.params} must hold a mapping of parameter names to values")
        params.update(loaded)
    if args.model:
        params["model_name"] = args.model
    only = [p for p in (args.only or []) if str(p)] or None
    _, results = run_notebooks(only, runs_root=args.runs_root, parameters=params)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
