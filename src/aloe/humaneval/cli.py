"""`aloe human-eval build|add-rater|serve|results`: blind pairwise comparison by clinicians, its input,
its raters and its results."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("human-eval", help="blind pairwise human evaluation (web page + results)",
                       description="Serve a page where clinicians compare two models' answers blind, or print "
                                   "win rates and a Bradley-Terry ranking from the votes.")
    hs = p.add_subparsers(dest="human_eval_command", metavar="build|add-rater|serve|results", required=True)
    bd = hs.add_parser("build", help="pair two models' open-ended answers into serve's input",
                       description="Match the questions two `aloe eval-open` runs answered (by set and id) and "
                                   "write serve's JSONL input, models named from each run's metrics.json. Given a "
                                   "recipe run directory and --models, pair two of its eval/<label>/openended runs "
                                   "and load them into RUN_DIR/humaneval/votes.sqlite, where the report reads votes.")
    bd.add_argument("run_a", type=Path,
                    help="an `aloe eval-open --out` folder (or one set's folder in it), or a recipe run directory")
    bd.add_argument("run_b", type=Path, nargs="?", help="the other run's folder (not with a run directory)")
    bd.add_argument("--models", default=None,
                    help="LABEL_A,LABEL_B: the run directory's models to compare (eval/<label>/openended)")
    bd.add_argument("--out", type=Path, default=None,
                    help="JSONL to write (required for two folders; default RUN_DIR/humaneval/comparisons.jsonl)")
    bd.add_argument("--db", type=Path, default=None,
                    help="also load the set into this vote database (default RUN_DIR/humaneval/votes.sqlite "
                         "for a run directory)")
    bd.add_argument("--n", "--limit", dest="n", type=int, default=None,
                    help="sample this many questions (default: all shared)")
    bd.add_argument("--seed", type=int, default=0, help="sampling seed")
    bd.add_argument("--names", default=None,
                    help="NAME_A,NAME_B to use instead of the runs' model specs (needed when both are the same)")
    bd.add_argument("--allow-partial", action="store_true",
                    help="pair the questions both runs answered instead of failing when one run has more")
    bd.set_defaults(func=build)
    ar = hs.add_parser("add-rater", help="add a rater to a vote database and print their access token",
                       description="Raters vote only with a token the organiser issues. Names are compared "
                                   "case-folded and whitespace-trimmed ('Bob' and ' bob' are one rater). Only a "
                                   "hash of the token is stored: keep the printed link, or --reissue.")
    ar.add_argument("name", help="the rater's name (1-64 letters, digits, spaces or . ' -)")
    ar.add_argument("--db", type=Path, required=True, help="SQLite file for questions and votes (created if absent)")
    ar.add_argument("--reissue", action="store_true",
                    help="give a rater already added a new token; their old one stops working")
    ar.set_defaults(func=add_rater)
    s = hs.add_parser("serve", help="serve the comparison page",
                      description='Input: JSONL, one {"id"?, "question", "answers": {model: text, ...}} per line.')
    s.add_argument("--input", type=Path, required=True, help="JSONL of questions with 2+ models' answers")
    s.add_argument("--db", type=Path, required=True, help="SQLite file for questions and votes (created if absent)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8765)
    s.set_defaults(func=serve)
    r = hs.add_parser("results", help="win rates with CIs, head-to-head counts, Bradley-Terry ranking")
    r.add_argument("--db", type=Path, required=True)
    r.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    r.set_defaults(func=results)


def _pair(text: str | None, option: str) -> tuple[str, str] | None:
    if text is None:
        return None
    parts = [x.strip() for x in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{option}: expected two comma-separated names, A,B")
    return parts[0], parts[1]


def build(args: argparse.Namespace) -> int:
    from aloe.humaneval.build import RUN_DIR_DB, RUN_DIR_INPUT, build_comparisons, is_run_dir, run_dir_runs
    from aloe.humaneval.store import Store, read_comparisons
    from aloe.io import write_jsonl

    if args.models is not None or is_run_dir(args.run_a):
        labels = _pair(args.models, "--models")
        if labels is None or args.run_b is not None or args.names is not None:
            raise ValueError(f"{args.run_a} is a run directory: name the two models to compare with "
                             "--models LABEL_A,LABEL_B (labels of eval/<label>/openended), without a second "
                             "folder or --names")
        run_a, run_b = run_dir_runs(args.run_a, labels)
        names: tuple[str, str] | None = labels
        out, db = args.out or args.run_a / RUN_DIR_INPUT, args.db or args.run_a / RUN_DIR_DB
    else:
        if args.run_b is None or args.out is None:
            raise ValueError(f"{args.run_a}: not a run directory (no eval/<label>/openended/metrics.json); to pair "
                             "two `aloe eval-open` folders give RUN_A RUN_B --out FILE")
        run_a, run_b, out, db, names = args.run_a, args.run_b, args.out, args.db, _pair(args.names, "--names")
    rows, counts = build_comparisons(run_a, run_b, n=args.n, seed=args.seed, names=names,
                                     allow_partial=args.allow_partial)
    if not rows:
        raise ValueError(f"no comparison to write: {counts}")
    write_jsonl(out, rows)
    models = ", ".join(rows[0]["answers"])
    print(f"{counts['written']} comparisons ({models}) written to {out}; "
          f"{counts['shared']} shared questions, {counts['empty_answer_skipped']} skipped for an empty answer, "
          f"{counts['only_in_a']} only in {run_a}, {counts['only_in_b']} only in {run_b}")
    if db is not None:
        store = Store(db)
        try:
            n_tasks = store.load(read_comparisons(out))  # the validation serve runs on its input
        finally:
            store.close()
        print(f"{n_tasks} comparisons in {db}; add raters with `aloe human-eval add-rater NAME --db {db}`, then "
              f"`aloe human-eval serve --input {out} --db {db}`")
    return 0


def add_rater(args: argparse.Namespace) -> int:
    from aloe.humaneval.store import Store

    store = Store(args.db)
    try:
        token = store.add_rater(args.name, reissue=args.reissue)
    finally:
        store.close()
    print(f"{token}\n(rater {args.name.strip()!r}: send them the serve address followed by /?token={token})")
    return 0


def serve(args: argparse.Namespace) -> int:
    from aloe.humaneval.app import make_server
    from aloe.humaneval.store import Store, read_comparisons

    store = Store(args.db)
    n_tasks = store.load(read_comparisons(args.input))
    server = make_server(store, args.host, args.port)
    host, port = server.server_address[:2]
    raters = store.raters()
    print(f"{n_tasks} comparisons; votes go to {args.db}; {len(raters)} rater(s)"
          + ("" if raters else f" yet: add them with `aloe human-eval add-rater NAME --db {args.db}`"))
    print(f"each rater opens http://{host}:{port}/?token=THEIR_TOKEN (raters added while serving work at once)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        store.close()
    return 0


def results(args: argparse.Namespace) -> int:
    from aloe.humaneval.results import results_text, summarize_votes
    from aloe.humaneval.store import read_votes
    from aloe.io import write_json

    if not args.db.is_file():
        raise FileNotFoundError(f"{args.db}: no such vote database")
    votes = read_votes(args.db)
    if not votes:
        print("no votes yet")
        return 0
    summary = summarize_votes(votes)
    print(results_text(summary))
    if args.json:
        write_json(args.json, summary)
    return 0
