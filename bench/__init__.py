"""Speed of the pipeline, measured side by side in one run (`make bench`, `make bench-quick`; README: Benchmarks).

One module per measurement (roofline, generation, ranking, training, pipeline), each a `measure(ctx)` returning
rows of figures beside their peers; bench.run runs them one by one and writes the table and results.json.
`--profile gpu` runs the GPU paths' measurements instead (gpu_generation, gpu_training, gpu_ranking) into
results-gpu.json."""
