"""Infrastructure: the component image, Kubernetes manifests, the topology on loopback."""
