"""``durafka serve``: the management HTTP API and the web dashboard of a task hub.

:func:`create_api` builds the ASGI app (FastAPI) over a
:class:`~durafka.management.Management`; ``durafka serve APP`` runs it on uvicorn.
"""

from durafka.api.app import create_api
from durafka.api.auth import ApiTokens, check_exposure

__all__ = ["ApiTokens", "check_exposure", "create_api"]
