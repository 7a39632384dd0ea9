"""pie's bundled fine-tuning helper: Stage I (scene) and Stage II (subject).

Launched as ``python -m pie_trainer``; it talks back only through JSON lines on
stdout (schema/README.md, "The progress stream") and the bundle it writes.
"""

__version__ = "0.1.0"
TRAINER_NAME = "pie-trainer"
