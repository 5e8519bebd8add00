"""``python -m cxr_monai study {create,serve,invite,report}``: make an observer study, run it, report it.

Example::

    python -m cxr_monai study create --inpainting runs/ce/inference --out studies/ce --trials 100 --repeats 10
    python -m cxr_monai study invite --study studies/ce --name R1      # prints R1's invitation link
    python -m cxr_monai study serve --study studies/ce --host 0.0.0.0 --port 8050
    python -m cxr_monai study report --study studies/ce                # studies/ce/report/report.md + MLflow
"""

from __future__ import annotations

import argparse
import importlib
import logging
from typing import Callable

# subcommand -> (module, function adding its arguments, function running it, help)
SUBCOMMANDS: dict[str, tuple[str, str, str, str]] = {
    "create": ("cxr_monai.apps.study.create", "add_create_arguments", "run_create",
               "make a study folder from a context-encoder inference folder (2AFC) or pix2pix exports "
               "(real or synthetic)"),
    "serve": ("cxr_monai.apps.study.cli", "add_serve_arguments", "run_serve", "serve the study to its readers"),
    "invite": ("cxr_monai.apps.study.cli", "add_invite_arguments", "run_invite",
               "make an invitation link for a reader"),
    "report": ("cxr_monai.apps.study.report", "add_report_arguments", "run_report",
               "per-reader and pooled results with exact CIs, agreement, MLflow"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="study_command", metavar="SUBCOMMAND")
    sub.required = True
    for name, (module_name, add_name, run_name, help_text) in SUBCOMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        getattr(module, add_name)(command)
        command.set_defaults(_study_run=getattr(module, run_name))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    runner: Callable[[argparse.Namespace], int] = args._study_run
    try:
        return int(runner(args) or 0)
    except ValueError as error:  # bad input: one line naming the file and the reason
        logging.getLogger("cxr_monai.study").error("%s", error)
        return 2


def _add_study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="the study folder made by `study create`")
    parser.add_argument("--database", default=None,
                        help="SQLAlchemy URL of the answers' database (default: sqlite in the study folder; "
                             "PostgreSQL: postgresql+psycopg://user:password@host/db, with psycopg installed)")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    _add_study_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8050)
    parser.add_argument("--threads", type=int, default=8, help="requests served at once")
    parser.add_argument("--invitations-only", action="store_true",
                        help="readers log in only by invitation (`study invite`), not by typing a name")
    parser.add_argument("--admin-token", default=None, help="the admin page's token (default: <study>/admin_token)")


def run_serve(args: argparse.Namespace) -> int:
    from waitress import serve

    from cxr_monai.apps.study.app import create_app

    app = create_app(args.study, args.database, args.admin_token, allow_names=not args.invitations_only)
    store = app.extensions["cxr_monai_study"]
    print(f"serving {len(store.trials)} trials of {args.study} ({store.manifest['design']}) on "
          f"http://{args.host}:{args.port}/ ; admin page /admin (token in {args.study}/admin_token)", flush=True)
    serve(app, host=args.host, port=args.port, threads=args.threads)
    return 0


def add_invite_arguments(parser: argparse.ArgumentParser) -> None:
    _add_study_arguments(parser)
    parser.add_argument("--name", required=True, action="append",
                        help="the reader's name (repeat for several readers)")
    parser.add_argument("--url", default="http://127.0.0.1:8050", help="the address readers reach the server at")


def run_invite(args: argparse.Namespace) -> int:
    from cxr_monai.apps.study.store import StudyStore

    store = StudyStore(args.study, args.database)
    for name in args.name:
        print(f"{name}: {args.url.rstrip('/')}/invite/{store.invite(name)}")
    return 0
