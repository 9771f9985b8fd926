"""The pyarrow batch runner: plan -> partitions -> parts -> manifest (issue 5)."""
