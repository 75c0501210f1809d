"""Programs the pipeline launches as separate processes (entry points over the sppo library)."""
