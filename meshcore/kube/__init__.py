"""The Kubernetes client stack for Istio resources: connecting (kubeconfig, context or the pod's
service account), one-line errors, Warning headers, 409 retries (`client`); hosts, routes and
weights of Istio's objects (`istio`) and of Gateway API HTTPRoutes (`httproute`); a rollout's
weight interface over either (`routes`). Imported by module path: loading the `kubernetes` client
takes a few hundred milliseconds that the mesh's child processes do not pay."""
