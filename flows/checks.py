"""What a flow checks before any work: the store and overrides a deployment or a user gave it are usable.

A deployment's `{{ $VAR }}` placeholders are filled by `prefect deploy` from its environment; an unset
variable leaves the placeholder in the stored parameters, where it would later break the recipe's YAML."""

from __future__ import annotations

import re

import fsspec

PLACEHOLDER = re.compile(r"\{\{\s*\$?\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def check_overrides(overrides: list[str]) -> None:
    """Raise ValueError naming the variable to set when an override still holds a `{{ $VAR }}` placeholder."""
    for override in overrides:
        found = PLACEHOLDER.search(override)
        if found:
            name = found.group(1)
            raise ValueError(
                f"override {override!r} still holds the placeholder {found.group(0)}: {name} was not set where "
                f"`prefect deploy` ran. Set it (export {name}=s3://bucket/prefix) and run `prefect deploy` again"
            )


def check_store(uri: str, variable: str | None = None) -> None:
    """Raise ValueError when `uri` cannot be an artifact store; `variable` names where it came from.

    The one call the flows and the deploy step make: sppo.store is to own this check (then it moves there)."""
    source = f"{variable}={uri!r}" if variable else f"store {uri!r}"
    found = PLACEHOLDER.search(uri)
    if found:
        raise ValueError(f"{source} is an unfilled placeholder: set {found.group(1)} before `prefect deploy`")
    if not uri.strip():
        fix = f"set {variable} (e.g. s3://bucket/prefix)" if variable else "set `store:` in the recipe"
        raise ValueError(f"{source}: the store is empty; {fix}")
    protocol, sep, rest = uri.partition("://")
    if sep:
        if protocol not in fsspec.available_protocols():
            raise ValueError(f"{source}: unknown protocol {protocol!r}; use a local folder or s3://bucket/prefix")
        if protocol in ("s3", "s3a") and not rest.strip("/"):
            raise ValueError(f"{source} names no bucket; use s3://bucket/prefix")
