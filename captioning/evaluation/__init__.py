"""Scoring a bundle on images it never trained on: choosing them, captioning, metrics, the report."""
