from components.samd_trainer.component import SamdTrainer  # noqa: F401
