"""Pretraining a student: distillation losses, the teacher cache, checkpoints and the loop.

* :mod:`headstart.train.config`: the options (:class:`~headstart.train.config.TrainConfig`, no torch);
* :mod:`headstart.train.kd_loss`: forward/reverse KL, generalised JSD, the chunked memory-safe loss,
  the cached top-k variant;
* :mod:`headstart.train.teacher_cache`: ``headstart cache-logits`` (top-k log-probs keyed to tokens);
* :mod:`headstart.train.checkpoint`: atomic, last-K, resumable checkpoints;
* :mod:`headstart.train.step`: ``train_step``, the student with its loss, the teacher's signal;
* :mod:`headstart.train.loop`: the :class:`~headstart.train.loop.Trainer` around it;
* :mod:`headstart.train.build`: options to a run (student, teacher, data guards) and the final export.
"""
