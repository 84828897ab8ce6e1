"""A stand-in for BFL's FLUX.1 Kontext API, for the demo, the tests and the benchmarks."""

from receiver.simulator.app import create_sim_app

__all__ = ["create_sim_app"]
