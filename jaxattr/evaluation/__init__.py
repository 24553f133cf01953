"""Evaluation of attributions: the IBA paper's degradation test (`degradation`), faithfulness metrics
(`faithfulness`), plausibility against human rationales (`plausibility`), the reproductions' statistics
(`stats`) and the harness that runs methods over a dataset and measures them (`harness`):

    from jaxattr.evaluation import evaluate, summarise
    df = evaluate(model, ["a text", "another"], methods=["ig", "random"], steps=8)   # pandas DataFrame
    summarise(df)

The harness imports JAX, the attribution driver and pandas on first use (`import jaxattr.evaluation` needs
neither pandas nor the models)."""

from jaxattr.evaluation.harness import evaluate, summarise

__all__ = ["evaluate", "summarise"]
