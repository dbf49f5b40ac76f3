from .assign_result import AssignResult
from .dsl_assigner import DynamicSoftLabelAssigner

__all__ = ["AssignResult", "DynamicSoftLabelAssigner"]
