"""Evaluation of attributions, one browsable API.

    from jaxattr.evaluation import evaluate, summarise
    df = evaluate(model, ["a text", "another"], methods=["ig", "random"], steps=8)   # pandas DataFrame
    summarise(df)

* the harness: `evaluate` (methods x examples -> each evaluator's per-example columns), `load_examples`;
* evaluators, each yielding `(method, metric, value)` rows: `Faithfulness` (LO/Comp/Suff/AOPC, SIG paper and
  ferret), `Degradation` (the IBA paper's degradation test), `Plausibility` (human rationales), found by
  name with `evaluator(name)`;
* tables: `summarise`, `records_frame`, `write_tables`, `write_degradation`, `write_reports`;
* the IBA paper's own protocol, as `jaxattr degradation` runs it: `run_degradation_test`, `load_input_examples`;
* `stored_records` (what an `evaluate(out=DIR)` holds); the metrics themselves are `faithfulness`,
  `degradation`, `plausibility`, the reproductions' statistics `stats`.

JAX, the attribution driver and pandas load on first use of the functions that need them."""

from jaxattr.evaluation.evaluators import Degradation, Faithfulness, Plausibility
from jaxattr.evaluation.evaluators import get as evaluator
from jaxattr.evaluation.harness import evaluate
from jaxattr.evaluation.iba_protocol import run_degradation_test
from jaxattr.evaluation.inputs import load_examples, load_input_examples
from jaxattr.evaluation.store import stored_records
from jaxattr.evaluation.tables import records_frame, summarise, write_degradation, write_reports, write_tables

__all__ = ["Degradation", "Faithfulness", "Plausibility", "evaluate", "evaluator", "load_examples",
           "load_input_examples", "records_frame", "run_degradation_test", "stored_records", "summarise",
           "write_degradation", "write_reports", "write_tables"]
