"""The simulated Online Boutique: every workload of a mesh spec in one asyncio process.

Calls between simulated services are in-process; each request and call is reported to the
mesh's observers as a `Hop` (the seam for spans and Istio-style metrics). `serve()` returns a
`meshsim.serving.Served` whose state is the `Runtime` and whose sites are the workloads.
"""

from meshsim.boutique.hops import INGRESS, Hop, Observer, Observers
from meshsim.boutique.runtime import CallFailed, Runtime
from meshsim.boutique.server import serve

__all__ = [
    "INGRESS",
    "CallFailed",
    "Hop",
    "Runtime",
    "Observer",
    "Observers",
    "serve",
]
