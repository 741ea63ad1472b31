"""Evaluation: informativity judges, real-frame proxies, FID/KID, per-epoch history, the report."""
