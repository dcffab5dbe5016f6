"""Parity and speed of aloe's log-likelihood MCQA scoring against lm-evaluation-harness.

Both score the same questions with the same prompts on the same loaded model object (so the same
weights, dtype and threads), at the same batch size. lm-eval runs from a local task YAML that this
script writes, pointing at a JSONL of the rendered prompts; aloe scores the same requests.

    python benchmarks/lmeval_parity.py --data-dir ../shared/data --limit 200

Prints, per benchmark and continuation kind: per-question agreement, both accuracies, both
questions/second (time spent in each engine's log-likelihood call) and the speed ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from aloe.mcq.benchmarks import BENCHMARKS, load_split
from aloe.mcq.prompts import continuations, loglik_context
from aloe.models.hf import HFCausalLM


def write_task(tmp: Path, name: str, questions, target: str) -> None:
    data = tmp / f"{name}.jsonl"
    with open(data, "w") as f:
        for q in questions:
            f.write(json.dumps({"query": loglik_context(q, [], target), "choices": continuations(q, target),
                                "gold": q.gold_index}) + "\n")
    (tmp / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: query\n"
        "doc_to_choice: choices\n"
        "doc_to_target: gold\n"
        "target_delimiter: ' '\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )


class Stopwatch:
    seconds = 0.0


def time_loglikelihood(lm) -> Stopwatch:
    """Times only lm-eval's log-likelihood computation (not task building or metrics)."""
    watch, inner = Stopwatch(), lm.loglikelihood

    def timed(requests, **kw):
        t0 = time.perf_counter()
        out = inner(requests, **kw)
        watch.seconds += time.perf_counter() - t0
        return out

    lm.loglikelihood = timed
    return watch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--benchmarks", default="medqa,medmcqa")
    ap.add_argument("--targets", default="letter,text")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    ours = HFCausalLM.from_spec(args.model, batch_size=args.batch_size)
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for bname in args.benchmarks.split(","):
            questions = load_split(BENCHMARKS[bname], "test", args.data_dir)[:args.limit]
            for target in args.targets.split(","):
                name = f"aloe_parity_{bname}_{target}"
                write_task(tmp, name, questions, target)
                peer = HFLM(pretrained=ours.model, tokenizer=ours.tokenizer, batch_size=args.batch_size)
                timed = time_loglikelihood(peer)
                res = lm_eval.simple_evaluate(model=peer, tasks=[name], task_manager=TaskManager(include_path=str(tmp)),
                                              log_samples=True, verbosity="ERROR")
                samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
                peer_ll = [np.array([r[0] for r in s["filtered_resps"]]) for s in samples]

                requests = [(loglik_context(q, [], target), " " + c) for q in questions for c in continuations(q, target)]
                t0 = time.perf_counter()
                flat = ours.loglikelihood(requests, progress=False)
                our_s = time.perf_counter() - t0
                our_ll, i = [], 0
                for q in questions:
                    our_ll.append(np.array([flat[i + k][0] for k in range(len(q.options))]))
                    i += len(q.options)

                gold = np.array([q.gold_index for q in questions])
                peer_pred = np.array([ll.argmax() for ll in peer_ll])
                our_pred = np.array([ll.argmax() for ll in our_ll])
                max_diff = max(float(np.abs(a - b).max()) for a, b in zip(peer_ll, our_ll, strict=True))
                n = len(questions)
                rows.append({
                    "benchmark": bname, "target": target, "n": n,
                    "agreement": float((peer_pred == our_pred).mean()),
                    "acc_lmeval": float((peer_pred == gold).mean()), "acc_aloe": float((our_pred == gold).mean()),
                    "max_abs_loglik_diff": max_diff,
                    "qps_lmeval": n / timed.seconds, "qps_aloe": n / our_s,
                })
                r = rows[-1]
                print(f"{bname:8s} {target:6s} n={n} agreement={100 * r['agreement']:.1f}% "
                      f"acc lm-eval={100 * r['acc_lmeval']:.1f} aloe={100 * r['acc_aloe']:.1f} "
                      f"max|dll|={max_diff:.2e}  q/s lm-eval={r['qps_lmeval']:.2f} aloe={r['qps_aloe']:.2f} "
                      f"ratio={r['qps_aloe'] / r['qps_lmeval']:.2f}x", flush=True)
    print("\n| benchmark | continuation | n | agreement | acc lm-eval | acc aloe | q/s lm-eval | q/s aloe | speed ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['benchmark']} | {r['target']} | {r['n']} | {100 * r['agreement']:.1f}% | {100 * r['acc_lmeval']:.1f} | "
              f"{100 * r['acc_aloe']:.1f} | {r['qps_lmeval']:.2f} | {r['qps_aloe']:.2f} | {r['qps_aloe'] / r['qps_lmeval']:.2f}x |")


if __name__ == "__main__":
    main()
