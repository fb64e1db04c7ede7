"""Training and fine-tuning LaMa the way the paper does (``lama-train``).

Large masks (:mod:`.mask_gen`), photo folders (:mod:`.data`), the official losses
(:mod:`.losses`, :mod:`.perceptual`, :mod:`.discriminator`), and the loop around them:
:mod:`.config` (one typed ``TrainConfig`` per run), :mod:`.trainer`, :mod:`.run_state`
(the official run-folder layout), :mod:`.logs`, :mod:`.validate`, :mod:`.cli`.

Importing this package is cheap; each submodule pulls in what it needs.
"""
