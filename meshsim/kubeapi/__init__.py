"""The embedded Kubernetes API for Istio resources (see `server` for what it serves); the
control-plane process (`meshsim.controld`) serves it."""
