"""Video object segmentation and tracking: lazy frame sources, trackers, sessions.

* :mod:`anyseg.video.frames`: ``open_frames`` (a video file or a folder of frames), decoded
  lazily, never all in memory.
* :mod:`anyseg.video.base`: the ``Tracker`` and ``TrackerState`` interfaces every engine implements,
  ``ObjectPrompt`` (a frame, an object id and an :class:`anyseg.types.Prompt`); trackers return
  :class:`anyseg.types.Masks` with ``object_ids``.
* :mod:`anyseg.video.sam2`: SAM 2 / 2.1, EdgeTAM, SAM 3 tracker through transformers' video models.
* :mod:`anyseg.video.classical`: optical-flow mask propagation (no weights); its flow and mask
  cues in :mod:`anyseg.video.classical_cues`.
* :mod:`anyseg.video.session`: ``VideoSession`` (prompts on any frame, streamed propagation,
  corrections) and ``load_tracker``. ``anyseg track`` (run folder, resume, re-detection) is the
  task :mod:`anyseg.tasks.track`.
"""
