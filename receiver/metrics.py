"""Process-local counters, exposed in the Prometheus text format at `/metrics`."""

from __future__ import annotations

from collections.abc import Mapping


class Metrics:
    def __init__(self) -> None:
        # Counts stay integers; amounts such as credits may be fractional.
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0) + amount

    def render(self, gauges: Mapping[str, Mapping[str, int]] | None = None) -> str:
        """Counters (`kontext_<name>_total`) and gauges (`kontext_<name>{label=...}`)."""
        lines: list[str] = []
        for name in sorted({name for name, _ in self.counters}):
            lines.append(f"# TYPE kontext_{name}_total counter")
            for (counter, labels), value in sorted(self.counters.items()):
                if counter == name:
                    lines.append(f"kontext_{name}_total{_labels(labels)} {value}")
        for name, series in (gauges or {}).items():
            lines.append(f"# TYPE kontext_{name} gauge")
            for label, value in sorted(series.items()):
                lines.append(f'kontext_{name}{{state="{label}"}} {value}')
        return "\n".join(lines) + "\n"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{value}"' for key, value in labels) + "}"
