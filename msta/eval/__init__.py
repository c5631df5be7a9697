"""Evaluation: pure metrics (``metrics``), the four protocols, and reports (``report``: JSON, markdown, plots)."""
