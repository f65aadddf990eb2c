"""One module per subcommand: ``run(cfg) -> result`` does the work, ``summary(result, cfg) -> str`` says
what came out. ``headstart run`` chains the same ``run`` functions the subcommands call."""
