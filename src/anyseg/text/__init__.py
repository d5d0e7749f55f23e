"""Text and open vocabulary: words -> masks, class maps and panoptic segmentations.

Backends (see ``docs/TEXT.md``): SAM 3's concept prompts (:mod:`anyseg.text.sam3`),
Grounding DINO / OWLv2 boxes prompting a SAM-family model (:mod:`anyseg.text.detectors`),
CLIP classification of masks and training-free dense CLIP (:mod:`anyseg.text.clip`).
Class names and synonyms: :mod:`anyseg.text.vocab`.
"""
