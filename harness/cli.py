"""The ``stealcheck`` command line: run, plan, validate, list, report, serve.

Exit codes: 0 success; 1 the run finished but an expectation gate failed; 2 invalid input
(scenario, file, incompatible choices); 3 the run itself failed, or some of its cells did (see
summary.json and run.log);
130 interrupted (the run folder is kept: resume with --resume).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import traceback
from pathlib import Path

from .errors import RunFailedEarly, ScenarioError, did_you_mean

EXIT_OK, EXIT_GATE_FAILED, EXIT_INVALID, EXIT_RUN_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
LIST_KINDS = ("attacks", "defences", "detectors", "victims", "data", "metrics", "ownership", "training",
              "scenarios")
#: Other spellings `stealcheck list` accepts for a kind.
LIST_ALIASES = {"attack": "attacks", "defence": "defences", "defense": "defences", "defenses": "defences",
                "detector": "detectors", "victim": "victims", "sources": "data", "source": "data",
                "metric": "metrics", "scenario": "scenarios", "scheme": "ownership", "schemes": "ownership"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stealcheck", description="Model-extraction security evaluation harness "
                                "(built on the Adversarial Robustness Toolbox).")
    p.add_argument("--version", action="version", version=f"stealcheck {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a scenario and write its report")
    run.add_argument("scenario", help="scenario YAML file, or the name of a built-in scenario (e.g. quickstart)")
    run.add_argument("--out", metavar="DIR", help="run folder (default: <output.dir>/<name>/<timestamp>)")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run (the one in --out, else the latest unfinished one)")
    run.add_argument("--quiet", action="store_true", help="no progress output (a bar on a terminal, one line per cell otherwise); warnings still show")
    run.add_argument("--fresh", action="store_true",
                     help="ignore cached victims and cell results and recompute everything (fresh ones are cached)")
    run.add_argument("--executor", choices=("local", "dask"), default="local",
                     help="where cells run: this process (default) or a Dask cluster")
    run.add_argument("--workers", type=_positive, metavar="N",
                     help="with --executor dask: start a local cluster of N worker processes (1 thread each)")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="with --executor dask: join the cluster at tcp://HOST:PORT (its workers must see the cache)")
    run.add_argument("--retries", type=_non_negative, default=1, metavar="N",
                     help="tries again after a cell fails (default 1); then it is recorded as failed, the rest goes on")
    run.add_argument("--debug", action="store_true", help="show tracebacks")

    pln = sub.add_parser("plan", help="print a scenario's cells, their dependencies and whether they are cached")
    pln.add_argument("scenario")
    pln.add_argument("--debug", action="store_true", help="show tracebacks")

    val = sub.add_parser("validate", help="check a scenario completely without running it")
    val.add_argument("scenario")
    val.add_argument("--debug", action="store_true", help="show tracebacks")

    lst = sub.add_parser("list", help="list registered plugins and their parameters")
    lst.add_argument("kind", nargs="?", metavar="KIND", help="only this kind: " + ", ".join(LIST_KINDS)
                     + " (singular works too)")
    lst.add_argument("--debug", action="store_true", help="show tracebacks")

    srv = sub.add_parser("serve", help="serve the scenario's victim behind one of its defences (Open Inference "
                         "Protocol, REST)")
    srv.add_argument("scenario", help="scenario YAML file or shipped scenario name; its victim is trained or loaded "
                     "from the cache exactly as `stealcheck run` does")
    srv.add_argument("--defence", required=True, metavar="ID", help="id of one of the scenario's defences (e.g. none, "
                     "reverse_sigmoid, or an active defence with its detector)")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    srv.add_argument("--port", type=_port, default=8080, help="TCP port (default 8080)")
    auth = srv.add_mutually_exclusive_group(required=True)
    auth.add_argument("--keys", metavar="FILE", help="API keys file (YAML: keys: [{client, key | key_sha256, quota, "
                      "rate_limit, burst, admin, undefended}])")
    auth.add_argument("--no-auth", action="store_true", help="serve without API keys (anyone who can reach the port "
                      "may query; no quotas)")
    srv.add_argument("--model-name", metavar="NAME", help="the model's name in the API (default: the scenario's name)")
    srv.add_argument("--max-batch", type=_positive, default=256, metavar="N",
                     help="most samples in one request (default 256; larger batches get 413)")
    srv.add_argument("--max-body-mb", type=float, default=4.0, metavar="MB",
                     help="largest request body in MiB (default 4; larger bodies get 413)")
    srv.add_argument("--clip-inputs", action="store_true",
                     help="clip input values into the declared range instead of refusing them (400)")
    srv.add_argument("--audit-log", metavar="FILE", help="append-only JSONL audit log, also the quota ledger "
                     "(default: <output.dir>/serve/<model>-<defence>.audit.jsonl)")
    srv.add_argument("--debug", action="store_true", help="show tracebacks")

    rep = sub.add_parser("report", help="rebuild report.html of a run folder from its results (no re-run)")
    rep.add_argument("run_dir")
    rep.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _non_negative(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1-65535, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _version() -> str:
    from . import __version__

    return __version__


def resolve_scenario_path(name: str) -> Path:
    """A path, or the name of a scenario shipped in stealcheck.scenarios.

    A name that is neither raises ScenarioError with the closest shipped name
    (``stealcheck run quickstrat`` suggests ``quickstart``).
    """
    if not name.strip() or "\x00" in name:
        raise ScenarioError(f"give a scenario: a YAML file or the name of a shipped scenario; got {name!r}.")
    path = Path(name)
    try:
        exists = path.exists()
    except OSError:  # e.g. a name longer than the file system allows: yamlio says why it cannot be read
        exists = True
    if exists or path.suffix in (".yaml", ".yml") or "/" in name:
        return path
    from importlib import resources

    shipped = resources.files("stealcheck.scenarios") / f"{name}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    names = shipped_scenarios()
    raise ScenarioError(f"no scenario file {name!r} and no shipped scenario of that name.{did_you_mean(name, names)} "
                        f"Shipped scenarios: {', '.join(names)}; or give the path of a YAML file.")


def shipped_scenarios() -> list[str]:
    from importlib import resources

    return sorted(p.name[:-5] for p in resources.files("stealcheck.scenarios").iterdir() if p.name.endswith(".yaml"))


def load_and_check(name: str):
    """Load a scenario and run every check that needs no training: the schema, cross-checks, and the
    pre-flight checks of files, user code and data shapes (:mod:`.preflight`). What `validate` does,
    and what `run` does before it creates the run folder."""
    from .preflight import check_inputs
    from .scenario import complete_scenario, load_scenario

    # complete: what a remote victim's section leaves out comes from its endpoint (which is contacted here)
    scenario = complete_scenario(load_scenario(resolve_scenario_path(name)))
    try:
        check_inputs(scenario)
    except ScenarioError as exc:
        if "input" in scenario.filled_in and (exc.path or "").startswith("victim.input"):
            said = exc.message.split("; set input:")[0].rstrip(".")  # the endpoint's shape is not the file's to set
            exc = ScenarioError(said + ". (The victim's input shape and range come from the endpoint's metadata "
                                "here: the data must fit the endpoint's model.)", path=exc.path)
        raise scenario.locate(exc) from None
    return scenario


def cmd_validate(args) -> int:
    scenario = load_and_check(args.scenario)
    print(f"{args.scenario}: valid. {len(scenario.attacks)} attack(s) x {len(scenario.defences)} defence(s) x "
          f"{len(scenario.model.seeds)} seed(s), budgets {scenario.model.budgets}, "
          f"{len(scenario.model.expect)} gate(s).")
    return EXIT_OK


def cmd_run(args) -> int:
    from .gates import format_gate_table
    from .runner import Execution, run_scenario

    if args.executor == "local" and (args.workers or args.scheduler):
        raise ScenarioError("--workers and --scheduler go with --executor dask.")
    if args.workers and args.scheduler:
        raise ScenarioError("--workers starts a local cluster, --scheduler joins one: give one of them.")
    scenario = load_and_check(args.scenario)
    execution = Execution(args.executor, args.workers, args.scheduler, args.retries)
    try:
        outcome = run_scenario(scenario, out_dir=args.out, resume=args.resume, quiet=args.quiet,
                               fresh=args.fresh, execution=execution)
    except ScenarioError as exc:
        raise scenario.locate(exc) from None
    except RunFailedEarly as exc:
        if args.debug:
            traceback.print_exception(exc.cause)
        log = "".join(f"\n  {line}" for line in exc.log_tail)
        print(f"stealcheck: the run failed before its run folder was created (nothing was written): {exc}"
              + (f"\nwhat it logged until then:{log}" if log else "") + "\n(--debug shows the traceback)",
              file=sys.stderr)
        return EXIT_RUN_FAILED
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"stealcheck: the run failed: {type(exc).__name__}: {exc}\n(see the run folder's summary.json and "
              "run.log; --debug shows the traceback)", file=sys.stderr)
        return EXIT_RUN_FAILED
    print(f"run folder: {outcome.run_dir}")
    print(f"report:     {outcome.run_dir / 'report.html'}")
    if outcome.gates:
        print(format_gate_table(outcome.gates))
    if outcome.failed_cells:
        print(f"{len(outcome.failed_cells)} cell(s) failed (see summary.json's failed_cells and run.log); "
              f"retry them with: stealcheck run {args.scenario} --resume --out {outcome.run_dir}", file=sys.stderr)
        return EXIT_RUN_FAILED
    if outcome.status == "partial":
        print(f"the run was interrupted; continue it with: stealcheck run {args.scenario} --resume "
              f"--out {outcome.run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not outcome.gates_passed:
        failed = sum(not g.passed for g in outcome.gates)
        print(f"{failed} expectation gate(s) failed.", file=sys.stderr)
        return EXIT_GATE_FAILED
    return EXIT_OK


def cmd_plan(args) -> int:
    from .cache import Cache
    from .plan import format_plan, plan
    from .rundir import package_versions

    scenario = load_and_check(args.scenario)
    print(format_plan(plan(scenario, package_versions()["stealcheck"]), Cache(scenario.model.output.cache_dir)))
    return EXIT_OK


def cmd_list(args) -> int:
    from . import registry

    kind = LIST_ALIASES.get(args.kind, args.kind) if args.kind else None
    if kind is not None and kind not in LIST_KINDS:
        raise ScenarioError(f"unknown kind '{args.kind}'.{did_you_mean(args.kind, LIST_KINDS)} "
                            f"Allowed: {', '.join(LIST_KINDS)}.")
    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
    kinds = [kind] if kind else [k for k in LIST_KINDS if k != "scenarios"]
    for name in kinds:
        if name == "scenarios":
            continue
        reg = registry.REGISTRIES[name]
        print(f"{name}:")
        items = reg.items()
        if not items:
            print("  (none yet)")
        for info in items:
            print(_wrapped(f"{info.name:<18} ", info.description, width, indent=2, hang=19))
            for pname, tname, default, desc in info.param_table():
                print(_wrapped(f"{pname}: {tname} = {default}", f"  -- {desc}" if desc else "", width, indent=6,
                               hang=4))
        print()
    if kind in (None, "scenarios"):
        print("shipped scenarios (stealcheck run NAME): " + ", ".join(shipped_scenarios()))
    return EXIT_OK


def _wrapped(head: str, text: str, width: int, indent: int, hang: int) -> str:
    """``head`` then ``text``, wrapped to ``width``; continuation lines are indented ``hang`` more."""
    import textwrap

    return textwrap.fill(head + text, width=width, initial_indent=" " * indent,
                         subsequent_indent=" " * (indent + hang), break_on_hyphens=False)


def cmd_serve(args) -> int:
    import math

    from .serve import Limits, build_service, load_keys, serve

    if not (math.isfinite(args.max_body_mb) and args.max_body_mb > 0):
        raise ScenarioError(f"--max-body-mb must be a positive number; got {args.max_body_mb}.")
    keys = load_keys(args.keys, args.max_batch) if args.keys else None
    scenario = load_and_check(args.scenario)
    if args.no_auth and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"stealcheck: warning: serving on {args.host} without API keys: anyone who can reach the port may "
              "query the model", file=sys.stderr)
    limits = Limits(max_batch=args.max_batch, max_body=int(args.max_body_mb * 1024 * 1024),
                    clip_inputs=args.clip_inputs)
    print(f"preparing the victim of {args.scenario} (trained, or loaded from the cache, as `stealcheck run` does)...",
          file=sys.stderr)
    try:
        service = build_service(scenario, args.defence, keys=keys, audit_log=args.audit_log, name=args.model_name,
                                limits=limits)
    except ScenarioError as exc:
        raise scenario.locate(exc) from None
    url = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}"
    print(f"serving model '{service.name}' behind defence '{args.defence}' at {url}/v2/models/{service.name}\n"
          f"  keys: {'none (--no-auth)' if keys is None else f'{len(keys)} client(s) from {args.keys}'}; "
          f"audit log: {service.audit.path}\n  Ctrl-C (or SIGTERM) stops it after the requests in flight.",
          file=sys.stderr)
    serve(service, args.host, args.port)
    return EXIT_OK


def cmd_report(args) -> int:
    from .reports import build_report

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ScenarioError(f"run folder not found: {run_dir}")
    path = build_report(run_dir)
    print(f"report: {path}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_INVALID
    handlers = {"run": cmd_run, "plan": cmd_plan, "validate": cmd_validate, "list": cmd_list, "report": cmd_report,
                "serve": cmd_serve}
    try:
        return handlers[args.command](args)
    except ScenarioError as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"stealcheck: error: {exc.format()}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("stealcheck: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `stealcheck list | head`: the reader left, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
