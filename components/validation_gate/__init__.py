from components.validation_gate.component import ValidationGate  # noqa: F401
from components.validation_gate.executor import DataAnomalyError  # noqa: F401
