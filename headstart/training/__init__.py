"""Pretraining a student: the stage, the step and its losses, the teacher cache, checkpoints and the loop.

* :mod:`headstart.training.stage`: the stage (``check``, ``run``: ``headstart train``);
* :mod:`headstart.training.student`: the student a run starts from (export, spec, random init);
* :mod:`headstart.training.step`: ``train_step``, the student with its loss, the teacher's targets;
* :mod:`headstart.training.kd_loss`: forward/reverse KL, generalised JSD, the chunked memory-safe loss,
  the cached top-k variant;
* :mod:`headstart.training.loop`: the :class:`~headstart.training.loop.Trainer` around the step;
* :mod:`headstart.training.checkpoint`: atomic, last-K, resumable checkpoints;
* :mod:`headstart.training.teacher_cache` and :mod:`headstart.training.cache_stage`: ``headstart cache-logits``;
* :mod:`headstart.training.export`: the trained student as a Hugging Face checkpoint.
"""
