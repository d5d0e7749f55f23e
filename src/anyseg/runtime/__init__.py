"""Inference runtimes for the promptable predictors (torch fast paths; ONNX in :mod:`anyseg.runtime.onnx`)."""
