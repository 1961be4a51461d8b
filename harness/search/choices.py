"""The codecs a unit (layer or tensor) may get in a per-unit search: :class:`Choice`, from the space.

Used by ``search=sensitivity`` (each unit alone with each codec) and
``search=mixed`` (one codec per unit, or ``fp32`` = keep float). With
``search.space.algorithm`` / ``bias_correction`` each codec comes in each
valid algorithm (``linear-4bit``, ``linear-4bit-gptq``, ``linear-4bit-gptq-bc``):
a unit's codec carries its algorithm.

Example:
    >>> from harness.space import SearchSpace
    >>> [c.label for c in space_choices(SearchSpace(nbits=(16, 4), modes=("linear", "kmeans_lut")))]
    ['fp16', 'linear-4bit', 'kmeans_lut-4bit']
"""
from __future__ import annotations

from dataclasses import dataclass

import quantizer

from harness.space import SearchSpace, Setting, codec_problem


@dataclass(frozen=True)
class Choice:
    """A codec a unit may get: ``label`` (``fp32`` = keep float, else the codec label
    :func:`quantizer.codec_label`: ``fp16``, ``kmeans_lut-4bit``, ``linear-8bit-gptq``...),
    ``nbits`` (32 for float), ``mode``, ``algorithm`` and ``bias_correction``."""

    label: str
    nbits: int
    mode: str
    algorithm: str = "rtn"
    bias_correction: bool = False

    @property
    def is_float(self) -> bool:
        return self.nbits == 32

    def setting(self) -> Setting:
        """The uniform setting (every layer selected) of this codec."""
        return Setting(self.nbits, "linear" if self.mode == "fp16" else self.mode, algorithm=self.algorithm,
                       bias_correction=self.bias_correction)


FLOAT = Choice("fp32", 32, "float")


def space_choices(space: SearchSpace) -> list[Choice]:
    """The valid codecs of ``space`` (16 bits counted once, as fp16), gentlest first.

    Empty when no (nbits, mode) combination is valid (a strategy refuses such a
    space before it gets here: :class:`harness.search.base.SearchStrategy`).
    """
    out: dict[str, Choice] = {}
    for nbits in sorted(space.nbits, reverse=True):
        for mode in space.modes:
            for algo in space.algorithms:
                for bc in space.bias_corrections:
                    if codec_problem(nbits, mode, space.lut_function, algo, bc) is not None:
                        continue
                    label = quantizer.codec_label(mode, nbits, algo, bc)
                    out.setdefault(label, Choice(label, nbits, "fp16" if nbits == 16 else mode, algo, bc))
    return list(out.values())
