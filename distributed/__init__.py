"""The Ray shell: actors and cluster connection around the library's runners (sppo.runner).

Imported only when a recipe sets `compute.executor: ray`; the library itself never imports Ray."""
