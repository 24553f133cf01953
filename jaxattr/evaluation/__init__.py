"""Evaluation of attributions: the IBA paper's degradation test (`degradation`), faithfulness metrics
(`faithfulness`), plausibility against human rationales (`plausibility`) and the reproductions' statistics
(`stats`)."""
