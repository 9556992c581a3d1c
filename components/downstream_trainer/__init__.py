from components.downstream_trainer.component import DownstreamTrainer  # noqa: F401
