"""Training and evaluating a face-recognition model on a SynID export (no Dagster).

- config.py: the training recipe (`TrainConfig`) and its presets (`vec2face`, `cpu`), read from a file too.
- data.py: readers of SynID's exports (imagefolder) and the batch augmentations (flip, RandomErasing), in torch.
- models.py: backbones built from analysis/frs.py's IResNet modules, and the ArcFace/CosFace/AdaFace heads.
- trainer.py: the training loop (AMP and channels-last on GPU, a checkpoint each epoch, resume).
- verification.py: InsightFace-format `.bin` verification sets and their 10-fold accuracy.
- results.py: $SYNID_HOME/evaluation.duckdb, the `fr_evaluations` table (its only writer).
"""
