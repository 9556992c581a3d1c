from components.scenario_trainer.component import ScenarioTrainer  # noqa: F401
