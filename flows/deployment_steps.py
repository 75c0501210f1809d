"""Steps prefect.yaml runs: `enter_project_folder` before each flow run (pull), `check_store_variable` when
`prefect deploy` runs (build), so a deployment without its store fails then, not hours later."""

from __future__ import annotations

import os
from pathlib import Path

from prefect.deployments.steps.pull import set_working_directory

from sppo.names import check_store_url

CHECKOUT = Path(__file__).resolve().parent.parent


def enter_project_folder(directory: str | None = None) -> dict[str, str]:
    """Make the project folder (recipes in configs/, prompts in data/) the flow run's working directory:
    `directory`, else $SPPO_WORKDIR, else the checkout this code runs from, else the worker's own folder
    (the images install the package and start their worker in the project folder, their WORKDIR)."""
    chosen = directory or os.environ.get("SPPO_WORKDIR")
    if not chosen:
        # "." is the worker's folder: pull steps run in a scratch folder, and Prefect resolves a relative
        # path against the folder the worker was started in.
        chosen = str(CHECKOUT) if (CHECKOUT / "prefect.yaml").is_file() else "."
    folder = Path(set_working_directory(str(Path(chosen).expanduser()))["directory"])
    if not (folder / "configs").is_dir():
        raise FileNotFoundError(
            f"{folder} is not the project folder (no configs/ in it): set SPPO_WORKDIR to the checkout or the "
            "image's project folder in the worker's environment"
        )
    return {"directory": str(folder)}


def check_store_variable(variable: str, value: str = "") -> dict[str, str]:
    """Fail `prefect deploy` when the environment variable that fills a deployment's store is unset (Prefect
    then passes "") or is not a store URI."""
    if not value:
        raise ValueError(
            f"{variable} is not set: export {variable}=s3://bucket/prefix (the store every node reaches) "
            "and run `prefect deploy` again"
        )
    try:
        check_store_url(value)
    except ValueError as err:
        raise ValueError(f"{variable}={value!r}: {err}") from None
    return {variable: value}
