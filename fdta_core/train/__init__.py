"""Face-recognition training on FDTA sets: IResNet + margin losses + Partial FC, DDP through torchrun.

``python -m fdta_core.train --config recipe.json`` is the training process (one per GPU under
``torchrun``); :mod:`fdta_core.train.launch` starts it, ``fdta train`` and the ``FDTATrainerLauncher``
node call that.
"""
