"""Evaluation with the field's protocols: metrics, the click simulator, data readers, runners, reports."""
