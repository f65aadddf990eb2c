"""Every stage's options, one typed dataclass tree each (no torch): the single source of flags, YAML keys and
recipe sections. :mod:`headstart.config.fields` is the machinery, :mod:`headstart.config.flags` the CLI side."""

from headstart.config.cache import CacheConfig, CachePaths
from headstart.config.evaluate import EvalConfig, EvalPaths, InspectConfig, InspectPaths
from headstart.config.export import ExportConfig, ExportPaths
from headstart.config.extract import ExtractConfig, ExtractPaths, ReconstructConfig
from headstart.config.fields import FieldError, Section, build, read_yaml
from headstart.config.prepare import PrepareConfig, PreparePaths
from headstart.config.recipe import CompareConfig, RecipeConfig, load_recipe
from headstart.config.search import SearchConfig, SearchPaths
from headstart.config.train import KDConfig, TrainConfig, TrainPaths

__all__ = ["CacheConfig", "CachePaths", "CompareConfig", "EvalConfig", "EvalPaths", "ExportConfig", "ExportPaths",
           "ExtractConfig", "ExtractPaths", "FieldError", "InspectConfig", "InspectPaths", "KDConfig",
           "PrepareConfig", "PreparePaths", "RecipeConfig", "ReconstructConfig", "SearchConfig", "SearchPaths",
           "Section", "TrainConfig", "TrainPaths", "build", "load_recipe", "read_yaml"]
