"""Few-shot / in-context segmentation: segment, in new images, what reference examples show.

:class:`Segmenter` (fit once, predict many), :class:`Reference` (an image and its mask), the
methods of :data:`~anyseg.fewshot.base.METHODS` (Matcher, PerSAM, PerSAM-F, SegGPT, SAM 3
exemplars, classical). ``docs/FEWSHOT.md`` says what each follows from its paper and where it
differs.
"""

from anyseg.fewshot.base import INSTANCES, METHODS, FewShotMethod, Reference, register_method
from anyseg.fewshot.segmenter import Segmenter, auto_method

__all__ = ["Segmenter", "Reference", "FewShotMethod", "METHODS", "INSTANCES", "register_method", "auto_method"]
