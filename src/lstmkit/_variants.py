"""The variant options of LSTM and LSTMCell (docs/variants.md): checks, parameters, initialisation."""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, fields

import torch
from torch import nn

from .kernels.contract import LSTMOptions

# kernel field -> parameter name stem (torch's names for torch's parameters)
PARAMETER_STEMS = {
    "w_ih": "weight_ih",
    "w_hh": "weight_hh",
    "b_ih": "bias_ih",
    "b_hh": "bias_hh",
    "w_hr": "weight_hr",
    "peephole_i": "peephole_i",
    "peephole_f": "peephole_f",
    "peephole_o": "peephole_o",
    "layer_norm_ih": "layer_norm_ih",
    "layer_norm_hh": "layer_norm_hh",
    "layer_norm_cell_weight": "layer_norm_cell_weight",
    "layer_norm_cell_bias": "layer_norm_cell_bias",
}


def _probability(owner: str, name: str, value: object) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"{owner}: {name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def _flag(owner: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} should be of type bool, got: {type(value).__name__}")
    return value


@functools.cache
def _options(coupled: bool, clip: float | None) -> LSTMOptions:
    """One ``LSTMOptions`` per setting, shared by every call (a new one cost 1-2 µs of a short call)."""
    return LSTMOptions(coupled=coupled, clip=clip)


@dataclass(frozen=True)
class Variants:
    """The options; defaults are the plain LSTM. Formulas in docs/variants.md."""

    forget_bias: float = 0.0
    layer_norm: bool = False
    peephole: bool = False
    coupled_input_forget: bool = False
    cell_clip: float | None = None
    zoneout: tuple[float, float] = (0.0, 0.0)  # (cell, hidden)
    recurrent_dropout: float = 0.0
    weight_dropout: float = 0.0

    @classmethod
    def checked(cls, owner: str, bias: bool, **options: object) -> Variants:
        """Validate the constructor's keyword options, with messages naming expected and given."""
        forget_bias = options["forget_bias"]
        if (
            not isinstance(forget_bias, numbers.Real)
            or isinstance(forget_bias, bool)
            or not math.isfinite(forget_bias)
        ):
            raise ValueError(f"{owner}: forget_bias must be a finite number, got {forget_bias!r}")
        if forget_bias and not bias:
            raise ValueError(
                f"{owner}: forget_bias={forget_bias} needs bias=True: it is added to the forget-gate "
                "slice of bias_ih at initialisation"
            )
        clip = options["cell_clip"]
        if clip is not None and (
            not isinstance(clip, numbers.Real)
            or isinstance(clip, bool)
            or not clip > 0
            or not math.isfinite(clip)
        ):
            raise ValueError(f"{owner}: cell_clip must be None or a finite number > 0, got {clip!r}")
        zoneout = options["zoneout"]
        pair = zoneout if isinstance(zoneout, (tuple, list)) else (zoneout, zoneout)
        if len(pair) != 2:
            raise ValueError(
                f"{owner}: zoneout must be a probability or a pair (cell, hidden), got {zoneout!r}"
            )
        return cls(
            forget_bias=float(forget_bias),
            layer_norm=_flag(owner, "layer_norm", options["layer_norm"]),
            peephole=_flag(owner, "peephole", options["peephole"]),
            coupled_input_forget=_flag(owner, "coupled_input_forget", options["coupled_input_forget"]),
            cell_clip=None if clip is None else float(clip),
            zoneout=tuple(_probability(owner, "zoneout", z) for z in pair),
            recurrent_dropout=_probability(owner, "recurrent_dropout", options["recurrent_dropout"]),
            weight_dropout=_probability(owner, "weight_dropout", options["weight_dropout"]),
        )

    def options(self) -> LSTMOptions:
        return _options(self.coupled_input_forget, self.cell_clip)

    def parameter_shapes(self, hidden_size: int) -> dict[str, tuple[int, ...]]:
        """The parameters these options add, by kernel field name."""
        shapes: dict[str, tuple[int, ...]] = {}
        if self.peephole:
            gates = "fo" if self.coupled_input_forget else "ifo"  # CIFG has no input gate to peep into
            shapes |= {f"peephole_{gate}": (hidden_size,) for gate in gates}
        if self.layer_norm:
            shapes |= {
                "layer_norm_ih": (4 * hidden_size,),
                "layer_norm_hh": (4 * hidden_size,),
                "layer_norm_cell_weight": (hidden_size,),
                "layer_norm_cell_bias": (hidden_size,),
            }
        return shapes

    @torch.no_grad()
    def reset(self, module: nn.Module, suffix: str, hidden_size: int) -> None:
        """After torch's uniform initialisation of every parameter: layer-norm gains 1 and biases
        0, and forget_bias added to the forget gate's slice of bias_ih."""
        if self.layer_norm:
            for stem in ("layer_norm_ih", "layer_norm_hh", "layer_norm_cell_weight"):
                getattr(module, stem + suffix).fill_(1.0)
            getattr(module, "layer_norm_cell_bias" + suffix).zero_()
        if self.forget_bias:
            getattr(module, "bias_ih" + suffix)[hidden_size : 2 * hidden_size] += self.forget_bias

    def non_torch(self) -> list[str]:
        """The options torch.nn.LSTM lacks (forget_bias only sets an initial value)."""
        default = Variants()
        return [
            f.name
            for f in fields(self)
            if f.name != "forget_bias" and getattr(self, f.name) != getattr(default, f.name)
        ]

    def repr_items(self) -> list[str]:
        default = Variants()
        items = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value != getattr(default, f.name):
                items.append(f"{f.name}={value}")
        return items
