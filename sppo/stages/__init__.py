"""One module per SPPO stage. Each takes the recipe and the folders of its inputs, writes its own folder
through store.commit_stage, and returns that stage's Manifest."""
