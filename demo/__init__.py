"""The whole chain in one command (`story-demo`): it drives the pipeline's verbs and then the bot's core,
so it is the one package that imports both `pipeline` and `bot` (they share only `contract`)."""
