"""Compatibility name of the Python client: ``import inferscope_client`` is ``inferscope.client``.

Kept for scripts written before the client became the ``inferscope`` package (``pip install
./clients/python``); new code imports ``inferscope``.
"""

import sys

from inferscope import client as _client

sys.modules[__name__] = _client
