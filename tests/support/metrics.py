"""Read an agent's /metrics text the way Prometheus does, whatever order the labels come in."""

from typing import Dict, FrozenSet, Tuple

from prometheus_client.parser import text_string_to_metric_families

Key = Tuple[str, FrozenSet[Tuple[str, str]]]


def samples(text: str) -> Dict[Key, float]:
    """Every sample of an exposition: ``{(name, frozenset(labels)): value}``."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value (0 when absent, as a counter that never moved)."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)
