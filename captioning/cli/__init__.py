"""The command line: the argument parser and its subcommands, the interactive menu and its prompts.

Both are thin layers over the library functions; ``runtime`` holds how they run (exit statuses,
when TensorFlow is imported). Importing ``main`` does not import TensorFlow.
"""
