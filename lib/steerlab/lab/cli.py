"""Command line for the Makefile: ``python -m steerlab.lab.cli provision | run-notebooks | report | answer |
compare-table``.

``run-notebooks --params FILE`` checks every name and value in ``FILE`` (and ``--model``)
against the notebooks before running any or creating a run folder: a bad parameter, a
params file that is missing or not YAML, a missing notebook or a model that cannot be
found is exit status 2 and one line naming it, never a traceback.
"""

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
    rep = sub.add_parser("report", help="(re)write a run folder's index.html")
    rep.add_argument("run_dir", type=Path, nargs="?", default=Path("runs/latest"), help="a run folder")
    table = sub.add_parser("compare-table", help="print a run's held-out AxBench table (notebook 04) as Markdown")
    table.add_argument("run_dir", type=Path, nargs="?", default=Path("runs/latest"), help="a run folder")
    said = sub.add_parser("answer", help="print a run's answer: its sentences, the claims, a verdict grid per measure")
    said.add_argument("run_dir", type=Path, nargs="?", default=Path("runs/latest"), help="a run folder")
    args = parser.parse_args(argv)
    if args.command == "compare-table":
        return _compare_table(args.run_dir)
    if args.command == "answer":
        return _answer(args.run_dir)
    if args.command == "report":
        from .page import build_report

        print(build_report(args.run_dir))
        return 0
    if args.command == "provision":
        from ..embedded import provision_embedded

        print(f"embedded model checkpoint: {provision_embedded()}")
        return 0
    import yaml

    from .report import ParameterError
    from .runner import run_notebooks

    def refuse(message: str) -> int:
        print(f"run-notebooks: {message}; nothing was run", file=sys.stderr)
        return 2

    params: dict[str, object] = {}
    if args.params:
        try:
            loaded = yaml.safe_load(args.params.expanduser().read_text(encoding="utf-8"))
        except FileNotFoundError:
            return refuse(f"params file not found: {args.params}")
        except UnicodeDecodeError as err:
            return refuse(f"params file {args.params} is not text (byte {err.object[err.start]:#04x} at offset "
                          f"{err.start} is not UTF-8): expected a YAML file of 'name: value' lines")
        except OSError as err:
            return refuse(f"cannot read params file {args.params}: {err}")
        except yaml.YAMLError as err:
            return refuse(f"params file {args.params} is not valid YAML: {' '.join(str(err).split())[:500]}")
        except RecursionError:  # PyYAML builds nested lists recursively: [[[[...]]]] thousands deep
            return refuse(f"params file {args.params} nests lists or mappings too deeply to be a parameters file")
        if loaded is None:
            return refuse(f"params file {args.params} is empty: expected a mapping of parameter names to values, "
                          "one 'name: value' per line")
        if not isinstance(loaded, dict):
            return refuse(f"params file {args.params} must hold a mapping of parameter names to values, got "
                          f"{type(loaded).__name__} (write one 'name: value' per line)")
        bad_names = [k for k in loaded if not isinstance(k, str)]
        if bad_names:
            from .params import shown

            return refuse(f"params file {args.params}: parameter names are words, got {shown(bad_names[0])} "
                          f"({type(bad_names[0]).__name__})")
        params.update(loaded)
    if args.model:
        params["model_name"] = args.model
    only = [p for p in (args.only or []) if str(p)] or None
    try:
        _, results = run_notebooks(only, runs_root=args.runs_root, parameters=params)
    except ParameterError as err:
        source = f"{args.params}" if args.params else "the command line"
        print(f"run-notebooks: bad parameters in {source}, nothing was run: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        return refuse(str(err))
    return 0 if all(r.ok for r in results) else 1


def _answer(run_dir: Path) -> int:
    from ..study.answer import from_summary
    from .report import load_summary
    from .tables import GRID_LEGEND, verdict_grid_markdown

    summary = load_summary(run_dir)
    found = from_summary(summary)
    if found is None:
        print(f"{run_dir}/summary.json has no contrasts of notebook 04: run notebooks/04_compare_methods.ipynb first",
              file=sys.stderr)
        return 1
    compare = summary["compare"]
    print(f"The answer of run {Path(run_dir).resolve().name} (model {compare.get('model')}, preset "
          f"{compare.get('preset')}):\n\n{found.text()}\n")
    for measure, block in compare["contrasts"].items():
        results = [r for r in block.get("results") or [] if r.get("scope") == "pooled" and r.get("label") in "abcde"]
        if results:
            print(f"{measure}, pooled over targets ({GRID_LEGEND}):\n")
            print("\n".join(verdict_grid_markdown(results)) + "\n")
    return 0


def _compare_table(run_dir: Path) -> int:
    from ..study.compare_report import best_table, describe
    from .report import load_summary, markdown_table

    compare = load_summary(run_dir).get("compare")
    if not isinstance(compare, dict) or "table" not in compare:
        print(f"{run_dir}/summary.json has no 'compare' results: run notebooks/04_compare_methods.ipynb first",
              file=sys.stderr)
        return 1
    print(f"Model `{compare['model']}`, {compare['date']}, preset `{compare['preset']}`: "
          f"{describe(compare['config'], compare.get('layers'))}; held-out AxBench score pooled over targets:\n")
    print(markdown_table(best_table(compare["table"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
