"""NanoDet-Plus with continual learning on top.

Importing the package imports the model, data and evaluator packages, which register their
classes with the config checker (``nanodet.util.config``): the lowest layer names none of them,
and any config read, from any entry point, is checked against all of them.
"""

from . import data, evaluator, model  # noqa: F401
