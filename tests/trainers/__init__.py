def custom_config(trainer: str, **fields) -> dict:
    """A trainer's custom_config as the pipeline builds it (every default from PipelineOptions), `fields` changed.

    `trainer`: "samd", "downstream", "knowledge_center" or a registered Keras model's name."""
    from pipelines.options import PipelineOptions

    options = PipelineOptions()
    build = {"samd": options.samd_trainer_config, "downstream": options.downstream_trainer_config,
             "knowledge_center": options.knowledge_center_config}.get(trainer)
    config = build() if build else options.keras_trainer_config(trainer)
    return {**config.as_custom_config(), **fields}
