"""One module per `musicgpt` subcommand: `add_parser(subparsers)` and a `run(args)` it sets as default."""
