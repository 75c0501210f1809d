"""Inspect what a store holds: `python -m sppo runs | show | compare | best`.

Read-only except `best`, which writes one small pointer object, `<run>/BEST.json`, naming an iteration's
model and the sha256 of its manifest (a pointer, never a copy). Works on any store ArtifactStore opens
(a local folder or s3://); imports neither Prefect, Ray nor torch, so it answers in well under a second.

status reads runs, iterations, manifests, metrics and the best pointer; best marks and checks that pointer;
render turns them into text tables; cli holds the argparse subcommands that sppo.__main__ adds."""

from sppo.runs.cli import add_parsers, run_command

__all__ = ["add_parsers", "run_command"]
