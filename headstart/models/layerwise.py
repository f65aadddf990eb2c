"""Layer-wise students inside headstart: their Auto-class registration and their adapter.

A layer-wise student (``model_type: headstart_layerwise``, see
:mod:`headstart.models.modeling_layerwise`) is trained, evaluated and reported like any student;
it is not yet a teacher to cut sub-networks from.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from headstart.errors import SpecError
from headstart.models.base import Tensor
from headstart.models.llama import LlamaAdapter
from headstart.models.modeling_layerwise import HeadstartLayerwiseConfig, HeadstartLayerwiseForCausalLM
from headstart.spec import LayerSizes, SubnetSpec, TeacherDims


def register() -> None:
    """Let ``AutoConfig``/``AutoModelForCausalLM`` load layer-wise checkpoints without ``trust_remote_code``."""
    AutoConfig.register(HeadstartLayerwiseConfig.model_type, HeadstartLayerwiseConfig, exist_ok=True)
    AutoModelForCausalLM.register(HeadstartLayerwiseConfig, HeadstartLayerwiseForCausalLM, exist_ok=True)


class LayerwiseAdapter(LlamaAdapter):
    """A layer-wise student of the Llama family: per-layer sizes for counting, the family's module names."""

    model_types = (HeadstartLayerwiseConfig.model_type,)
    layerwise = False  # a layer-wise student is not (yet) a teacher

    def _dims(self, config: PretrainedConfig) -> TeacherDims:
        dims = super()._dims(config)
        layers = tuple(LayerSizes(**{k: int(s[k]) for k in ("num_key_value_heads", "num_attention_heads",
                                                              "intermediate_size")}) for s in config.layer_sizes)
        return TeacherDims(**{**dims.__dict__, "layer_sizes": layers})

    def check(self, spec: SubnetSpec) -> None:
        raise SpecError(_NOT_A_TEACHER)

    def slice_state_dict(self, state: dict[str, Tensor], spec: SubnetSpec) -> dict[str, Tensor]:
        raise SpecError(_NOT_A_TEACHER)


_NOT_A_TEACHER = ("cutting a sub-network out of a layer-wise student is not supported yet; "
                  "cut it from the student's teacher instead")
