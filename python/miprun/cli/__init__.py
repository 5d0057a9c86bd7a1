"""The ``miprun`` command: one module per subcommand over the pipeline."""
