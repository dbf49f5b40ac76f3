"""The command-line tools, importable as ``nanodet.tools`` (pyproject.toml maps this folder there).

Each module has ``main(argv=None)`` (its work; a test calls it with a list of arguments) and
``cli()`` (``main`` with a user's mistake reported in one line: the console scripts
``nanodet-train``, ``nanodet-test``, ... of ``pip install -e .``, and ``python tools/<name>.py``).
"""
