"""The embedded Kubernetes API for Istio resources (see `server` for what it serves)."""

from meshsim.kubeapi.kubeconfig import CONTEXT, write_kubeconfig
from meshsim.kubeapi.server import Running, serve
from meshsim.kubeapi.thread import ThreadedServer, serve_in_thread

__all__ = ["CONTEXT", "Running", "ThreadedServer", "serve", "serve_in_thread", "write_kubeconfig"]
