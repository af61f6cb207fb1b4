"""The user-level operations (build, project, materialize, ...) over engine, io and format."""
