"""Dataset readers, clip sampling, augmentation and the synthetic benchmark.

- :mod:`yofo.data.records`: ``Expression``, ``Video``, ``ImageRef``; ``read_frame``, ``read_mask``.
- :mod:`yofo.data.ytvos`, :mod:`yofo.data.davis`, :mod:`yofo.data.refcoco`: readers of the official formats
  (``load_ytvos``, ``load_davis``, ``load_refcoco``); :mod:`yofo.data.load`: ``load_dataset(spec)`` for any.
- :mod:`yofo.data.clips`: ``ClipDataset``, the training clips; :mod:`yofo.data.augment`: their augmentation.
- :mod:`yofo.data.synthetic`: ``synthesize``, the synthetic referring-video benchmark (``yofo synth``).
- :mod:`yofo.data.stats`: counts and problems of a split (``yofo data stats``).
"""
