"""One module per `bstream` subcommand, each a click.Command that stream.cli loads lazily."""
