"""`python -m genimg …`: the CLI where the `genimg` script is not on PATH (e.g. a Ray Job's entrypoint)."""

from genimg.cli import app

app(prog_name="genimg")
