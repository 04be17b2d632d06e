"""Videos in, frames out: which files are videos (``sources``, ``frame_folders``), what a file
declares (``probe``), the decoders and the choice among them (``decoders``, ``nvdec``,
``opening``), decoding in watched worker processes (``workers``), resampling to a frame
rate (``resample``), the preset's resize, crops and normalisation (``preprocess``) and the
clip protocol (``clip_plan``). Nothing here imports torch at module level: decode workers
import this package."""
