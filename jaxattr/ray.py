"""Ray Data executor: attribution over a Ray cluster, for corpora past one host or pod (`pip install jaxattr[ray]`).

    import ray, jaxattr.ray
    ds = ray.data.read_parquet("corpus/")                     # rows with a text column (optional id, label)
    records = jaxattr.ray.attribute(ds, "ckpt/", "ig", actors=8, num_gpus=1, steps=32)
    records.write_parquet("out/")                             # or .take_all(): one dict per record

`attribute` maps the dataset through a pool of actors (`map_batches` over `ActorPoolStrategy(size=actors)`):
each `Attributor` loads the model once from its spec (a checkpoint or HF dir on storage every node reads,
`minilm`, `default`) on the devices Ray gives it, tokenises its rows and runs the attribution `Driver` on them.
The records are those `jaxattr attribute` writes for the same examples, as columns (a field some records lack
reads as None, as in a Parquet OUT), in no particular order; without an id column the ids are Ray's unique row
ids (`monotonically_increasing_id`), not row numbers. Errors raised on the actors surface when the dataset runs.

`RayDriver` is `jaxattr attribute --executor ray`: a `Driver` whose `run` sends the pending examples (already
tokenised: resume compares their token ids) in cost-balanced chunks (`multihost.cost_chunks`) to the actor
pool and yields each chunk's records as it comes back, so `Job.attribute` writes, resumes and
orders OUT exactly as for one process. The actors keep no partial sums: a kill loses the chunks in flight.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jaxattr.errors import UserError

if TYPE_CHECKING:
    from jaxattr.attribution.driver import Step

CHUNKS_PER_ACTOR = 8  # a job is cut into at least this many chunks per actor (balance, and what a kill loses)
CHUNK_EXAMPLES = 256  # ... and into chunks of at most about this many examples (records come back per chunk)
ENCODED = "examples"  # the column of a `RayDriver` row: a pickled list of tokenised examples


def require_ray() -> Any:
    """The `ray` module with Ray Data, or a one-line UserError naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is a separate extra of ray
    except ImportError:
        raise UserError("the Ray executor needs Ray Data, which is not installed: pip install jaxattr[ray]") from None
    return ray


def connect(address: str | None = None) -> bool:
    """Join the Ray cluster at `address` (else RAY_ADDRESS, else a new local one) unless this process already
    has; True when this call connected (the caller then shuts it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    local = address is None and not os.environ.get("RAY_ADDRESS")
    try:
        ray.init(address=address, **({"include_dashboard": False} if local else {}))
    except ConnectionError as e:
        raise UserError(f"--ray-address {address}: no Ray cluster reachable ({e})") from None
    return True


def pool_size(actors: int | None = None, num_gpus: float | None = None) -> tuple[int, float]:
    """(actors, GPUs per actor), the defaults filled from the cluster: one actor per GPU and 1 GPU each when it
    has GPUs, else 1 actor on the CPUs."""
    gpus = int(require_ray().cluster_resources().get("GPU", 0))
    actors = max(1, gpus) if actors is None else actors
    if actors < 1:
        raise UserError(f"the Ray executor needs at least 1 actor, not {actors}")
    return actors, (1 if gpus else 0) if num_gpus is None else num_gpus


class Attributor:
    """One actor of the pool: the model (`load_model(model)`, with `dtype` and the `long` reading) and a
    `Driver` of `method`, built once; each call attributes one batch of rows and returns its records.

    A row holds either a text (`text_column`, optional `pair_column`, `id_column`, `label_column` of class ids;
    tokenised here) or, in the `ENCODED` column, a pickled list of examples tokenised by `jaxattr attribute`. `lines`:
    records as JSON lines (one `record` column, exact), else as columns. `expect`: the settings of the model the
    caller loaded, compared to this actor's (a node whose path holds another model is refused), the probe
    logits left out (another device's float rounding)."""

    def __init__(self, model: str, method: str, options: Mapping[str, Any], *, target: Any = "predicted",
                 output: str = "logit", seed: int = 0, tokens_per_batch: int | str | None = None,
                 tolerance: float | None = None, dtype: str = "float32", matmul_precision: str = "default",
                 long: str = "truncate", window: int | None = None, stride: int | None = None,
                 window_pool: str = "mean", text_column: str = "text", pair_column: str | None = None,
                 id_column: str = "id", label_column: str = "label", lines: bool = False,
                 expect: Mapping[str, Any] | None = None) -> None:
        import jax

        from jaxattr.attribution.driver import DEFAULT_TOKENS_PER_BATCH, DEFAULT_TOLERANCE, Driver
        from jaxattr.attribution.results import plain, settings_diff
        from jaxattr.models.loading import enable_compilation_cache, load_model
        from jaxattr.models.precision import with_dtype
        from jaxattr.models.windowed import with_long

        enable_compilation_cache()
        self.model = with_long(with_dtype(load_model(model), dtype), long, window, stride, window_pool)
        if tokens_per_batch is None:
            tokens_per_batch = DEFAULT_TOKENS_PER_BATCH if jax.default_backend() == "cpu" else "auto"
        m = self.model
        self.driver = Driver(m.params, m.cfg, method, options, mask_id=m.mask_id, pad_id=m.pad_id, output=output,
                             seed=seed, tokens_per_batch=tokens_per_batch,
                             tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance)
        if expect is not None:
            mine = {k: v for k, v in plain(self.driver.settings()).items() if k != "probe"}
            diff = settings_diff({k: v for k, v in plain(expect).items() if k != "probe"}, mine)
            if diff:
                raise UserError(f"{model} on this Ray node differs from the caller's in {', '.join(diff)}; give a "
                                "model path every node reads alike")
        self.target, self.precision, self.long, self.lines = target, matmul_precision, long, lines
        self.columns = (text_column, pair_column, id_column, label_column)

    def __call__(self, batch: Mapping[str, Any]) -> Any:
        from jaxattr.models.precision import matmul_precision

        if ENCODED in batch:
            examples = [ex for blob in batch[ENCODED] for ex in pickle.loads(blob)]
        else:
            examples = self.encode(batch)
        with matmul_precision(self.precision):
            records = [r for step in self.driver.run(examples, self.target) for r in step.records]
        if self.lines:
            return {"record": [json.dumps(r) for r in records]}
        import pyarrow as pa

        return pa.Table.from_pylist(records)

    def encode(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Tokenise a batch of text rows as `jaxattr attribute` tokenises its input."""
        from jaxattr.data.tokenize import encode_texts
        from jaxattr.models.loading import sequence_model
        from jaxattr.models.windowed import check_native, token_limit

        text, pair, id_col, label_col = self.columns
        cfg = sequence_model(self.model, "jaxattr.ray.attribute").cfg
        pairs = None if pair is None else batch[pair].tolist()
        examples = encode_texts(self.model.tokenizer, batch[text].tolist(), pairs,
                                max_length=token_limit(cfg, self.long))
        labels = batch[label_col].tolist() if label_col in batch else [-1] * len(examples)
        for ex, rid, label in zip(examples, batch[id_col].tolist(), labels):
            if label is not None and not isinstance(label, int):
                raise UserError(f"example {rid!r} has the label {label!r}; the {label_col!r} column holds class ids")
            ex["id"], ex["label"] = rid, -1 if label is None else label
        if self.long == "native":
            check_native(examples, cfg.max_positions)
        return examples


def _pool(ds: Any, actors: int, num_gpus: float, batch_size: int, kwargs: Mapping[str, Any]) -> Any:
    """`ds` mapped through `actors` `Attributor`s, each given `num_gpus` GPUs and batches of `batch_size` rows."""
    ray = require_ray()
    return ds.map_batches(Attributor, fn_constructor_kwargs=dict(kwargs), batch_size=batch_size,
                          compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=num_gpus or None)


def attribute(ds: Any, model: str | os.PathLike[str], method: str, /, *, target: Any = "predicted",
              actors: int | None = None, num_gpus: float | None = None, batch_size: int = 64,
              text_column: str = "text", pair_column: str | None = None, id_column: str = "id",
              label_column: str = "label",
              output: str = "logit", seed: int = 0, tokens_per_batch: int | str | None = None,
              tolerance: float | None = None, dtype: str = "float32", matmul_precision: str = "default",
              long: str = "truncate", window: int | None = None, stride: int | None = None,
              window_pool: str = "mean", **options: Any) -> Any:
    """Attribute the texts of `ds` (a `ray.data.Dataset`, or a list of texts or row dicts, whose ids are then
    their positions) with `method` (and its `options`: steps=, baseline=, ...) of the model `model` names, on
    `actors` Ray actors of `num_gpus` GPUs each (`pool_size`'s defaults), `batch_size` rows per actor call; the
    other keywords are `jaxattr attribute`'s flags. Returns a lazy `ray.data.Dataset` of records, one row each
    (see the module's docstring). Connects to Ray (RAY_ADDRESS, else a new local cluster) unless this process
    already has."""
    from jaxattr.attribution import registry

    ray = require_ray()
    if not isinstance(model, (str, os.PathLike)):
        raise UserError("jaxattr.ray.attribute takes the model's spec (a checkpoint dir, 'minilm', 'default'), "
                        "which every actor loads on its own devices, not a loaded model")
    options = registry.get(method).resolve_options(options)  # a bad method or option: fail before any actor
    connect()
    if not isinstance(ds, ray.data.Dataset):
        rows = [{text_column: r} if isinstance(r, str) else dict(r) for r in ds]
        ds = ray.data.from_items([{id_column: i, **r} for i, r in enumerate(rows)])
    columns = ds.columns()
    for name in (text_column, pair_column):
        if name is not None and name not in columns:
            raise UserError(f"the dataset has no column {name!r}; its columns are {columns}")
    if id_column not in columns:
        from ray.data.expressions import monotonically_increasing_id

        ds = ds.with_column(id_column, monotonically_increasing_id())
    kwargs = {"model": str(model), "method": method, "options": options, "target": target, "output": output,
              "seed": seed, "tokens_per_batch": tokens_per_batch,
              "tolerance": tolerance, "dtype": dtype, "matmul_precision": matmul_precision, "long": long,
              "window": window, "stride": stride, "window_pool": window_pool, "text_column": text_column,
              "pair_column": pair_column, "id_column": id_column, "label_column": label_column}
    return _pool(ds, *pool_size(actors, num_gpus), batch_size, kwargs)


def user_error(exc: BaseException) -> UserError | None:
    """The `UserError` an actor raised, found inside the exception Ray reports for it (None if there is none;
    Ray's own wrappers, which may subclass the cause's class, are looked through to their `cause`)."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        if isinstance(e, UserError) and not isinstance(cause, BaseException):
            return e
        todo += [n for n in (cause, e.__cause__, e.__context__, *e.args) if isinstance(n, BaseException)]
    return None


class RayDriver:
    """`jaxattr attribute --executor ray`: the settings, `work` and `total_work` of the caller's `driver` (the
    same model, loaded once here to key and check OUT), its `run` on a Ray actor pool. `actor`: what each
    `Attributor` loads and runs besides the method (dtype, long reading, ...); `actors`, `num_gpus`: the pool
    (`pool_size`'s defaults)."""

    def __init__(self, driver: Any, model: str, actor: Mapping[str, Any], *, address: str | None = None,
                 actors: int | None = None, num_gpus: float | None = None) -> None:
        require_ray()
        self.driver, self.model, self.actor = driver, str(model), dict(actor)
        self.address, self.actors, self.num_gpus = address, actors, num_gpus

    def settings(self) -> dict[str, Any]:
        return self.driver.settings()

    def work(self, ex: Mapping[str, Any]) -> int:
        return self.driver.work(ex)

    def total_work(self, examples: Sequence[Mapping[str, Any]]) -> int:
        return self.driver.total_work(examples)

    resumable = False  # the actors keep no partial sums

    def run(self, examples: Sequence[Mapping[str, Any]], target: Any = "predicted", resume: Any = None
            ) -> Iterator[Step]:
        """Yield the records of `examples` chunk by chunk as the actors finish them (in no set order; each
        example's records together), as `Driver.run`'s steps."""
        from jaxattr.attribution.driver import Step
        from jaxattr.attribution.multihost import cost_chunks

        if not examples:
            return
        ray = require_ray()
        started = connect(self.address)
        try:
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False  # the caller shows one bar
            context.raise_original_map_exception = True  # an actor's UserError reaches `user_error` whole
            actors, gpus = pool_size(self.actors, self.num_gpus)
            by_length = sorted(examples, key=lambda ex: len(ex["input_ids"]))  # a chunk: few length buckets
            n = max(CHUNKS_PER_ACTOR * actors, -(-len(examples) // CHUNK_EXAMPLES))
            chunks = cost_chunks(by_length, lambda ex: self.driver.work(ex) * len(ex["input_ids"]), n)
            ds = ray.data.from_items([{ENCODED: pickle.dumps(list(c))} for c in chunks],
                                     override_num_blocks=len(chunks))
            kwargs = {**self.actor, "model": self.model, "method": self.driver.spec.name,
                      "options": self.driver.options, "target": target, "lines": True,
                      "expect": self.driver.settings()}
            by_id = {json.dumps(ex["id"]): ex for ex in examples}
            try:
                for batch in _pool(ds, actors, gpus, 1, kwargs).iter_batches(batch_size=None, batch_format="numpy"):
                    records = [json.loads(line) for line in batch["record"]]
                    yield Step(records, sum(self.driver.work(by_id[k]) for k in
                                            {json.dumps(r["id"]) for r in records} if k in by_id), None)
            except ray.exceptions.RayError as e:
                found = user_error(e)
                if found is None:
                    raise
                raise UserError(str(found)) from None
        finally:
            if started:
                ray.shutdown()
