"""Inference: the ELBOs that route discrete guide sites through an estimator."""
