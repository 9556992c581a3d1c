"""ScenarioSimilarity: SAMD's implicit scenario similarity (Equation 3) as a TFX component.

The component is imported lazily so that Beam workers, which only need
`beam_pipeline` and `similarity`, do not import TFX.
"""


def __getattr__(name):
    if name in ("ScenarioSimilarity", "ScenarioSimilarityArtifact"):
        from components.scenario_similarity import component

        return getattr(component, name)
    raise AttributeError(name)
