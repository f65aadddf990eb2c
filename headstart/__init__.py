"""headstart: start small language models from the best sub-network of a pretrained teacher."""

from headstart.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    HeadstartError,
    SpecError,
    TeacherError,
)
from headstart.spec import SubnetSpec, TeacherDims

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "HeadstartError",
    "SpecError",
    "SubnetSpec",
    "TeacherDims",
    "TeacherError",
    "__version__",
]
