"""Datasets (embedded corpora, local files, HF names), tokenisation with word alignment, bucketed batches."""

from jaxattr.data.datasets import (
    CORPORA,
    SPLITS,
    TOKEN_CORPORA,
    iter_batches,
    label_names_of,
    load_corpus,
    load_dataset_spec,
    load_table,
    load_token_corpus,
    stratified_split,
    tokenize_dataset,
)
from jaxattr.data.tokenize import BUCKETS, FINE_BUCKETS, bucket_length, encode_texts, pad_batch

__all__ = [
    "BUCKETS", "CORPORA", "FINE_BUCKETS", "SPLITS", "TOKEN_CORPORA", "bucket_length", "encode_texts", "iter_batches",
    "label_names_of", "load_corpus", "load_dataset_spec", "load_table", "load_token_corpus", "pad_batch",
    "stratified_split", "tokenize_dataset",
]
