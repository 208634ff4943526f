"""Operating durafka without Python: the layer under ``durafka`` commands and ``durafka serve``.

:class:`Management` holds every operation (instances, entities, dead letters,
partitions, topics); :mod:`durafka.management.models` the JSON shapes both the
command line (``--json``) and the HTTP API return.
"""

from durafka.management.service import Management

__all__ = ["Management"]
