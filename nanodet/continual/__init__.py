"""Continual learning of NanoDet: scenarios, task data, methods, the task-sequence runner, reports."""

from .methods import METHODS, ContinualMethod, build_method
from .runner import ContinualRunner
from .scenario import Scenario, ScenarioError, parse_scenario

__all__ = ["METHODS", "ContinualMethod", "ContinualRunner", "Scenario", "ScenarioError",
           "build_method", "parse_scenario"]
