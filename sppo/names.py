"""Names that come from users and end up in paths: run names and store URLs, checked before any work.

A run name becomes a folder under the store, so it must never climb out of it (`../x`), be absolute
(`/srv/x`), be empty (the store root itself) or hide (`.x`). A store URL must name a place this code can
write: a local folder, file:///abs/path, or s3://bucket[/prefix]."""

from __future__ import annotations

import re

RUN_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_RUN_NAME = re.compile(RUN_NAME_PATTERN)
_PLACEHOLDER = re.compile(r"\{\{\s*\$?(\w+)\s*\}\}")
# S3 bucket names: 3-63 lowercase letters, digits, dots and hyphens (AWS's rule, which MinIO and moto follow).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
STORE_SCHEMES = ("file", "s3")


class InvalidNameError(ValueError):
    """A run name or store URL that cannot be used (a ValueError: a mistake, never retried)."""


def check_run_name(run: object) -> str:
    """`run` if it is a valid run name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    if not isinstance(run, str) or not _RUN_NAME.fullmatch(run):
        raise InvalidNameError(
            f"run name {run!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (a run name is a folder inside the store, never a path)"
        )
    return run


def check_no_placeholder(text: str, where: str) -> None:
    """A `{{ $VAR }}` left in a value means `prefect deploy` ran without VAR in its environment."""
    if placeholder := _PLACEHOLDER.search(text):
        raise InvalidNameError(
            f"{where} holds the unresolved placeholder {placeholder.group(0)}: set the environment variable "
            f"{placeholder.group(1)} where `prefect deploy` runs (e.g. {placeholder.group(1)}=s3://my-bucket/sppo), "
            "then deploy again"
        )


def check_store_url(url: object) -> str:
    """`url` if it names a store this code can use: a local folder, file:///path or s3://bucket[/prefix]."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidNameError("store is empty: set `store` to a local folder or s3://bucket/prefix")
    check_no_placeholder(url, f"store {url!r}")
    scheme, sep, rest = url.partition("://")
    if not sep:
        head = url.split("/", 1)[0]
        if ":" in head:  # "s3:/bucket", "s3:bucket": a URL with its scheme mistyped, not a folder name
            raise InvalidNameError(
                f"store {url!r} looks like a mistyped URL: write s3://bucket/prefix or a folder path"
            )
        return url
    if scheme not in STORE_SCHEMES:
        raise InvalidNameError(
            f"store {url!r}: unknown scheme {scheme!r}; use a folder, file:///path or s3://bucket/prefix"
        )
    if scheme == "file" and not rest.startswith("/"):
        raise InvalidNameError(f"store {url!r}: a file:// URL needs an absolute path (file:///srv/sppo)")
    if scheme == "s3":
        bucket = rest.split("/", 1)[0]
        if not bucket:
            raise InvalidNameError(f"store {url!r} names no bucket: write s3://bucket or s3://bucket/prefix")
        if not _BUCKET.fullmatch(bucket):
            raise InvalidNameError(
                f"store {url!r}: {bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, '.', '-')"
            )
        if any(part in ("", ".", "..") for part in rest.rstrip("/").split("/")[1:]):
            raise InvalidNameError(f"store {url!r}: the prefix has an empty, '.' or '..' part")
    return url
