"""The processor: owns partitions of ``H.orchestrations`` and runs orchestrations on them."""

from durafka.processor.loop import Processor

__all__ = ["Processor"]
