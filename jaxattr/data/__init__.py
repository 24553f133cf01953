"""Datasets (embedded corpora, local files, HF names), tokenisation with word alignment, bucketed batches."""

from jaxattr.data.tokenize import BUCKETS, bucket_length, encode_texts, pad_batch

__all__ = ["BUCKETS", "bucket_length", "encode_texts", "pad_batch"]
