"""Prefect tasks: one per SPPO stage, each a thin shell over sppo.stages."""
