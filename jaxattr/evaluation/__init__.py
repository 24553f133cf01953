"""Evaluation of attributions: the IBA paper's degradation test (`degradation`), faithfulness metrics."""
