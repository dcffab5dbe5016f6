"""`aloe human-eval build|serve|results`: blind pairwise comparison by clinicians, its input and results."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("human-eval", help="blind pairwise human evaluation (web page + results)",
                       description="Serve a page where clinicians compare two models' answers blind, or print "
                                   "win rates and a Bradley-Terry ranking from the votes.")
    hs = p.add_subparsers(dest="human_eval_command", metavar="build|serve|results", required=True)
    bd = hs.add_parser("build", help="pair two `aloe eval-open` runs' answers into serve's input",
                       description="Match the questions two `aloe eval-open` runs answered (by set and id) and "
                                   "write serve's JSONL input, models named from each run's metrics.json.")
    bd.add_argument("run_a", type=Path, help="an `aloe eval-open --out` folder (or one set's folder in it)")
    bd.add_argument("run_b", type=Path, help="the other run's folder")
    bd.add_argument("--out", type=Path, required=True, help="JSONL to write")
    bd.add_argument("--n", type=int, default=None, help="sample this many questions (default: all shared)")
    bd.add_argument("--seed", type=int, default=0, help="sampling seed")
    bd.add_argument("--names", default=None,
                    help="NAME_A,NAME_B to use instead of the runs' model specs (needed when both are the same)")
    bd.add_argument("--allow-partial", action="store_true",
                    help="pair the questions both runs answered instead of failing when one run has more")
    bd.set_defaults(func=build)
    s = hs.add_parser("serve", help="serve the comparison page",
                      description='Input: JSONL, one {"id"?, "question", "answers": {model: text, ...}} per line.')
    s.add_argument("--input", type=Path, required=True, help="JSONL of questions with 2+ models' answers")
    s.add_argument("--db", type=Path, required=True, help="SQLite file for questions and votes (created if absent)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--token", default=None,
                   help="access token (default: ALOE_HUMAN_EVAL_TOKEN, or a random one printed at start)")
    s.set_defaults(func=serve)
    r = hs.add_parser("results", help="win rates with CIs, head-to-head counts, Bradley-Terry ranking")
    r.add_argument("--db", type=Path, required=True)
    r.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    r.set_defaults(func=results)


def build(args: argparse.Namespace) -> int:
    from aloe.humaneval.build import build_comparisons
    from aloe.io import write_jsonl

    names = None
    if args.names is not None:
        parts = [x.strip() for x in args.names.split(",")]
        if len(parts) != 2 or not all(parts):
            raise ValueError("--names: expected NAME_A,NAME_B")
        names = (parts[0], parts[1])
    rows, counts = build_comparisons(args.run_a, args.run_b, n=args.n, seed=args.seed, names=names,
                                     allow_partial=args.allow_partial)
    if not rows:
        raise ValueError(f"no comparison to write: {counts}")
    write_jsonl(args.out, rows)
    models = ", ".join(rows[0]["answers"])
    print(f"{counts['written']} comparisons ({models}) written to {args.out}; "
          f"{counts['shared']} shared questions, {counts['empty_answer_skipped']} skipped for an empty answer, "
          f"{counts['only_in_a']} only in {args.run_a}, {counts['only_in_b']} only in {args.run_b}")
    return 0


def serve(args: argparse.Namespace) -> int:
    import os
    import secrets

    from aloe.humaneval.app import make_server
    from aloe.humaneval.store import Store, read_comparisons

    token = args.token or os.environ.get("ALOE_HUMAN_EVAL_TOKEN") or secrets.token_urlsafe(24)
    store = Store(args.db)
    n_tasks = store.load(read_comparisons(args.input))
    server = make_server(store, token, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"{n_tasks} comparisons; votes go to {args.db}")
    print(f"share with raters: http://{host}:{port}/?token={token}")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        store.close()
    return 0


def results(args: argparse.Namespace) -> int:
    from aloe.humaneval.results import results_text, summarize_votes
    from aloe.humaneval.store import Store
    from aloe.io import write_json

    if not args.db.is_file():
        raise FileNotFoundError(f"{args.db}: no such vote database")
    store = Store(args.db)
    votes = store.votes()
    store.close()
    if not votes:
        print("no votes yet")
        return 0
    summary = summarize_votes(votes)
    print(results_text(summary))
    if args.json:
        write_json(args.json, summary)
    return 0
